"""The BackSplit panel's behaviour, without Qt: one controller that two faces bind to.

``PanelController`` owns what the panel shows and does: the inputs (volume, segmentation, output), the rows
of the roles table (live with segments added, renamed or removed), the backend's life cycle (connect, start
local, stop), the current job and its progress, which actions are enabled, and the messages for the user.
The Slicer widget (``Widget.py``) and the browser app bind to it: they call its handlers on user actions,
call :meth:`PanelController.tick` from a timer, and redraw from :meth:`PanelController.state` (plain data)
whenever an observer callback says it changed. Nothing here touches ``slicer.mrmlScene``, ``slicer.modules``,
``slicer.app`` or ``qt``: the scene, a settings store, the backend factory and the way to ask the user are
injected.

Why threads plus a yielding tick (and not a QThread or a child process per request): network calls run in
daemon threads (:class:`BackgroundCall`) and the UI only checks a done-flag in ``tick()``, so no handler waits
on the network. Inside Slicer, PythonQt keeps the GIL on the main thread while the Qt event loop is idle:
``PythonQt::setEnableThreadSupport`` only takes effect when PythonQt is built with
``PYTHONQT_FULL_THREAD_SUPPORT`` and Slicer never calls it, so Python threads run only while the main thread
runs Python. ``tick()`` therefore releases the GIL for :data:`GIL_SLICE_S` while background work is pending;
with the binding's timer at :data:`TICK_MS` the threads get a steady share and finish their transfers, and a
slow server never freezes the UI. Training itself runs in the server's own process (local or remote).
"""

from __future__ import annotations

import logging
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from BackSplitLib.errors import BackSplitError
from BackSplitLib.vocabulary import DEFAULT_SERVER_URL

from BackSplitSlicer.backends import (ENGINE_MODULE, Backend, BackgroundCall, JobStatus, LocalBackend, ModelInfo,
                                      make_backend, missing_packages)
from BackSplitSlicer.panel_state import (ACTIONS, BACKENDS, CHECKING, CONNECTED, CONNECTING, DISCONNECTED,  # noqa: F401
                                         INSTALLING, LOCAL_MODE_NOTE, LOST, SETTINGS, STARTING, MemorySettings,
                                         Message, PanelState, RoleRow, Settings, as_list, enabled_actions,
                                         local_mode_supported)
from BackSplitSlicer.roles import role_rows, set_segment_role

TICK_MS = 100  # how often a binding calls tick()
GIL_SLICE_S = 0.004  # GIL released per tick so worker threads progress under PythonQt
POLL_S = 1.0  # job progress
READY_PROBE_S = 0.5  # local engine readiness
LOCAL_START_TIMEOUT_S = 120.0
RECENT_SERVERS = 8


class _Task:
    def __init__(self, what: str, call: BackgroundCall, on_done: Callable[[Any], None],
                 on_error: Callable[[BaseException], None] | None):
        self.what, self.call, self.on_done, self.on_error = what, call, on_done, on_error


class PanelController:
    """The panel's behaviour. Handlers return at once; :meth:`tick` collects background results."""

    def __init__(self, scene, settings: Settings, backend_factory: Callable[..., Backend] = make_backend,
                 ask: Callable[[str], bool] = lambda question: False, training_options: dict | None = None,
                 clock: Callable[[], float] = time.monotonic, python_version: tuple = tuple(sys.version_info[:2])):
        self.scene, self.settings, self.backend_factory, self.ask = scene, settings, backend_factory, ask
        self.training_options = dict(training_options or {})  # extra job fields (the self-test keeps jobs tiny)
        self.clock = clock
        self.backend: Backend | None = None
        self._token: str | None = None  # typed by the user (Remote); never stored
        self._job: JobStatus | None = None
        self._models: list[ModelInfo] = []
        self._tasks: list[_Task] = []
        self._observers: list[Callable[[PanelState], None]] = []
        self._next_poll = self._next_probe = self._ready_deadline = 0.0
        self._installer = None
        self._message_serial = 0
        self._published: PanelState | None = None
        self._segmentation_node = None
        self._segmentation_tags: list[int] = []
        self._scene_tags = [scene.AddObserver(scene.EndCloseEvent, self._on_scene_closed),
                            scene.AddObserver(scene.NodeRemovedEvent, self._on_node_removed)]
        note = "" if local_mode_supported(python_version) else LOCAL_MODE_NOTE.format(
            version=".".join(map(str, python_version)))
        get = settings.get
        self._state = PanelState(
            backend_kind=str(get(SETTINGS["backend"], "Local" if not note else "Remote")),
            server_url=str(get(SETTINGS["server_url"], DEFAULT_SERVER_URL)),
            recent_servers=tuple(as_list(get(SETTINGS["recent_servers"], []))),
            ca_bundle=str(get(SETTINGS["ca_bundle"], "")),
            local_data_folder=str(get(SETTINGS["local_data_folder"], str(Path.home() / "BackSplit"))),
            wheel_folder=str(get(SETTINGS["wheel_folder"], "")),
            iterations=int(get(SETTINGS["iterations"], 300)), local_mode_note=note)
        self.enter()

    # ------------------------------------------------------------------ observing
    def observe(self, callback: Callable[[PanelState], None]) -> None:
        """``callback(state)`` after every change (called on the thread that calls handlers and ``tick``)."""
        self._observers.append(callback)

    def state(self) -> PanelState:
        return replace(self._state, roles=tuple(role_rows(self._segmentation_node)), enabled=self._enabled())

    def _publish(self) -> None:
        state = self.state()
        if state != self._published:
            self._published = state
            for callback in list(self._observers):
                callback(state)

    def _set(self, **changes: Any) -> None:
        self._state = replace(self._state, **changes)

    def _say(self, text: str) -> None:
        self._set(status=text)

    def _error(self, what: str, error: BaseException) -> None:
        """One message for the user (with the hint); a stack trace only for errors that are not ours."""
        if isinstance(error, BackSplitError):
            text, hint = f"{what}: {error.message}", error.hint
        else:
            text, hint = f"{what}: {type(error).__name__}: {error}", None
            logging.getLogger(__name__).error(what, exc_info=error)  # the traceback is for developers
        self._message_serial += 1
        self._set(status=text, message=Message(self._message_serial, "error", text, hint))

    # ------------------------------------------------------------------ module life cycle
    def enter(self) -> None:
        """The panel is shown: pick inputs when none are chosen. Never touches the backend or the job."""
        if self._node(self._state.volume_id) is None:
            volume = self._first("vtkMRMLScalarVolumeNode", exclude="vtkMRMLLabelMapVolumeNode")
            self._set(volume_id=volume.GetID() if volume else None)
        if self._node(self._state.segmentation_id) is None:
            from BackSplitSlicer.case import PREDICTION_NODE_NAME

            segmentation = self._first("vtkMRMLSegmentationNode", exclude_name=PREDICTION_NODE_NAME)
            self._watch_segmentation(segmentation)
        self._publish()

    def leave(self) -> None:
        """The panel is hidden: nothing stops (the binding keeps calling ``tick``)."""

    def shutdown(self) -> None:
        """The application quits or the module reloads: stop a local engine without waiting for it."""
        self._watch_segmentation(None)
        for tag in self._scene_tags:
            self.scene.RemoveObserver(tag)
        self._scene_tags = []
        if isinstance(self.backend, LocalBackend):
            self.backend.terminate()
        self.backend = None

    def _on_scene_closed(self, caller=None, event=None) -> None:
        self._segmentation_node, self._segmentation_tags = None, []  # its nodes (and observers) are gone
        self._set(volume_id=None, segmentation_id=None, output_id=None, organ_map_id=None)
        self.enter()

    def _on_node_removed(self, caller=None, event=None) -> None:
        for key in ("volume_id", "output_id", "organ_map_id"):
            if getattr(self._state, key) and self._node(getattr(self._state, key)) is None:
                self._set(**{key: None})
        if self._state.segmentation_id and self._node(self._state.segmentation_id) is None:
            self._watch_segmentation(None)
        self._publish()

    # ------------------------------------------------------------------ inputs and roles
    def set_volume(self, node_id: str | None) -> None:
        self._set(volume_id=node_id or None)
        self._publish()

    def set_segmentation(self, node_id: str | None) -> None:
        self._watch_segmentation(self._node(node_id))
        self._publish()

    def set_output(self, node_id: str | None) -> None:
        self._set(output_id=node_id or None)
        self._publish()

    def set_organ_map(self, node_id: str | None, structures: str | None = None) -> None:
        self._set(organ_map_id=node_id or None,
                  organ_structures=self._state.organ_structures if structures is None else structures)
        self._publish()

    def set_role(self, segment_id: str, role: str) -> None:
        """Store a segment's role (by id, so a rename in between does not matter)."""
        node = self._segmentation_node
        try:
            segment = node.GetSegmentation().GetSegment(segment_id) if node else None
            if segment is None:
                raise BackSplitError("that segment no longer exists", "pick the role again in the table")
            set_segment_role(node, segment.GetName(), role)
        except BackSplitError as e:
            self._error("Setting the role failed", e)
        self._publish()

    def _watch_segmentation(self, node) -> None:
        """Observe the selected segmentation so the roles table follows segments added, renamed, removed."""
        if self._segmentation_node is not None:
            for tag in self._segmentation_tags:
                self._segmentation_node.RemoveObserver(tag)
        self._segmentation_node, self._segmentation_tags = node, []
        if node is not None:
            segmentation_class = type(node.GetSegmentation())
            for event in (segmentation_class.SegmentAdded, segmentation_class.SegmentRemoved,
                          segmentation_class.SegmentModified, segmentation_class.SegmentsOrderModified,
                          "ModifiedEvent"):
                self._segmentation_tags.append(node.AddObserver(event, lambda caller, event: self._publish()))
        self._set(segmentation_id=node.GetID() if node is not None else None)

    def _node(self, node_id: str | None):
        return self.scene.GetNodeByID(node_id) if node_id else None

    def _first(self, class_name: str, exclude: str = "", exclude_name: str = ""):
        for i in range(self.scene.GetNumberOfNodesByClass(class_name)):
            node = self.scene.GetNthNodeByClass(i, class_name)
            if not (exclude and node.IsA(exclude)) and node.GetName() != exclude_name:
                return node
        return None

    def _inputs(self):
        volume, segmentation = self._node(self._state.volume_id), self._segmentation_node
        if volume is None or segmentation is None:
            raise BackSplitError("choose a volume and a segmentation first", "use the Inputs section")
        return volume, segmentation

    # ------------------------------------------------------------------ auxiliary structures (scene work)
    def add_tissue_classes(self) -> None:
        from BackSplitSlicer.auxiliary_segments import add_ct_tissue_segments

        try:
            names = add_ct_tissue_segments(*self._inputs())
            self._say(f"Added auxiliary segments: {', '.join(names)}.")
        except Exception as e:  # noqa: BLE001 (shown to the user)
            self._error("Adding CT tissue classes failed", e)
        self._publish()

    def import_organ_map(self) -> None:
        from BackSplitSlicer.auxiliary_segments import import_organ_segments

        try:
            volume, segmentation = self._inputs()
            organ_map = self._node(self._state.organ_map_id)
            if organ_map is None:
                raise BackSplitError("choose an organ map first", "pick a labelmap or segmentation in 'Organ map'")
            names = import_organ_segments(organ_map, volume, segmentation, self._state.organ_structures)
            self._say(f"Imported auxiliary segments: {', '.join(names)}.")
        except Exception as e:  # noqa: BLE001
            self._error("Importing the organ map failed", e)
        self._publish()

    # ------------------------------------------------------------------ backend settings
    def set_backend_kind(self, kind: str) -> None:
        """The user picks Local or Remote: a running backend of the other kind stops (the user's choice)."""
        if kind not in BACKENDS or kind == self._state.backend_kind:
            return
        if self.backend is not None:
            self.stop()
        self.settings.set(SETTINGS["backend"], kind)
        self._set(backend_kind=kind, missing_packages=())
        self._publish()

    def set_server_url(self, url: str) -> None:
        self._set(server_url=url.strip())
        self._publish()

    def set_token(self, token: str) -> None:
        """The Remote server's token: kept in memory only."""
        self._token = token.strip() or None

    def set_ca_bundle(self, path: str) -> None:
        self._remember("ca_bundle", path.strip())

    def set_local_data_folder(self, path: str) -> None:
        self._remember("local_data_folder", path.strip())

    def set_wheel_folder(self, path: str) -> None:
        self._remember("wheel_folder", path.strip())

    def _remember(self, name: str, value: Any) -> None:
        """A state field that is also kept in the settings store (across scenes and sessions)."""
        self.settings.set(SETTINGS[name], value)
        self._set(**{name: value})
        self._publish()

    def set_training(self, iterations: int | None = None, train_new: bool | None = None,
                     predict_auxiliary: bool | None = None) -> None:
        if iterations is not None:
            self._remember("iterations", int(iterations))
        if train_new is not None:
            self._set(train_new=bool(train_new))
        if predict_auxiliary is not None:
            self._set(predict_auxiliary=bool(predict_auxiliary))
        self._publish()

    def select_model(self, model_id: str | None) -> None:
        self._set(model_id=model_id or None)
        self._publish()

    # ------------------------------------------------------------------ backend life cycle
    def connect(self) -> None:
        """Connect (Remote) or check packages and start the local engine (Local)."""
        if self.backend is not None:
            self._close_backend()
        self._job = None
        self._set(job=None, models=(), model_id=None)
        try:
            if self._state.backend_kind == "Remote":
                self._remember_server(self._state.server_url)
                self.backend = self.backend_factory("Remote", url=self._state.server_url, token=self._token,
                                                    ca_bundle=self._state.ca_bundle)
                self._describe()
            elif self._state.local_mode_note:
                raise BackSplitError(self._state.local_mode_note)
            else:
                self.backend = self.backend_factory("Local", token=secrets.token_urlsafe(32),
                                                    data_folder=self._state.local_data_folder)
                self._set(connection=CHECKING, server_info="Checking the local engine's packages...")
                self._run("Checking the local engine's packages", missing_packages, self.backend.python,
                          self.backend.engine_path, on_done=self._on_packages)
        except Exception as e:  # noqa: BLE001
            self.backend = None
            self._set(connection=DISCONNECTED, server_info="Not connected.")
            self._error("Connecting failed", e)
        self._publish()

    def _on_packages(self, missing: list[str]) -> None:
        self._set(missing_packages=tuple(missing))
        if missing:
            self.backend = None
            self._set(connection=DISCONNECTED, server_info=f"Missing in Slicer's Python: {', '.join(missing)}.")
            what = ("the BackSplit engine (BackSplitLib.server) is not beside the module"
                    if ENGINE_MODULE in missing else f"the local engine needs {', '.join(missing)}")
            self._error("Starting the local engine failed", BackSplitError(
                what, "click 'Install PyTorch and MONAI', or use a Remote server"))
            return
        self.backend.start()
        self._ready_deadline = self.clock() + LOCAL_START_TIMEOUT_S
        self._next_probe = self.clock()
        self._set(connection=STARTING, server_info="Starting the local engine...")
        self._say("Starting the local engine...")

    def _describe(self) -> None:
        self._set(connection=CONNECTING, server_info="Connecting...")
        self._run("Connecting", self.backend.describe, on_done=self._on_connected, on_error=self._on_connect_failed)

    def _on_connected(self, description: str) -> None:
        self._set(connection=CONNECTED, server_info=description)
        self._say("Connected.")
        if self._job is not None and not self._job.finished:
            self._next_poll = self.clock()
        self.refresh_models()

    def _on_connect_failed(self, error: BaseException) -> None:
        self._set(connection=LOST if self._job is not None else DISCONNECTED, server_info="Not connected.")
        self._error("Connecting failed", error)

    def reconnect(self) -> None:
        """After a lost connection: try the same backend again; a running job is picked up where it is."""
        if self.backend is None:
            self.connect()
            return
        if isinstance(self.backend, LocalBackend) and not self.backend.running:
            job = self._job  # the new engine requeues it (it resumes from its checkpoint): keep following it
            self.connect()
            if job is not None:
                self._show_job(job)
            return
        self._describe()
        self._publish()

    def stop(self) -> None:
        """The user's explicit Stop: drop the backend (a local engine is stopped), forget the job."""
        self._close_backend()
        self._job = None
        self._set(connection=DISCONNECTED, server_info="Not connected.", job=None, models=(), model_id=None)
        self._say("Stopped.")
        self._publish()

    def _close_backend(self) -> None:
        backend, self.backend = self.backend, None
        self._tasks = [t for t in self._tasks if t.what.startswith("Installing")]  # late answers are dropped
        if backend is not None:
            BackgroundCall(backend.close)  # a local engine may take seconds to finish a checkpoint

    def _remember_server(self, url: str) -> None:
        recent = [url, *[u for u in self._state.recent_servers if u != url]][:RECENT_SERVERS]
        self.settings.set(SETTINGS["server_url"], url)
        self.settings.set(SETTINGS["recent_servers"], recent)
        self._set(recent_servers=tuple(recent))

    # ------------------------------------------------------------------ install (Local mode)
    def install(self) -> None:
        """Install what Local mode needs into this Python, with the output in ``install_log``."""
        from BackSplitSlicer.install import PipInstall

        question = ("Install the BackSplit engine's packages (PyTorch, MONAI and others) into Slicer's Python "
                    "now? This downloads several hundred MB and may take minutes.")
        if not self.ask(question):
            return
        try:  # every step runs in a child process (PyTorch as the PyTorch extension picks it): nothing blocks
            python = self.backend_factory("Local", data_folder=self._state.local_data_folder).python
            self._installer = PipInstall(python, wheel_folder=self._state.wheel_folder or None)
            self._set(connection=INSTALLING, install_log=self._installer.log())
            self._run("Installing the local engine's packages", self._installer.wait,
                      on_done=self._on_installed)
        except Exception as e:  # noqa: BLE001
            self._error("Installing the local engine's packages failed", e)
        self._publish()

    def _on_installed(self, returncode: int) -> None:
        torch = self._installer.torch
        self._set(install_log=self._installer.log(), connection=DISCONNECTED,
                  torch_build=torch.describe() if torch else "")
        if returncode != 0:
            self._error("Installing the local engine's packages failed", BackSplitError(
                f"pip exited with code {returncode}: {self._installer.log_tail()}",
                "read the install log below; offline, set a wheel folder; behind a proxy, set HTTPS_PROXY"))
            return
        self._run("Checking the local engine's packages", missing_packages, self._installer.python,
                  on_done=self._on_checked_after_install)

    def _on_checked_after_install(self, missing: list[str]) -> None:
        self._set(missing_packages=tuple(missing))
        if missing:
            self._error("Installing the local engine's packages failed", BackSplitError(
                f"pip finished but Slicer's Python still lacks {', '.join(missing)}", "read the install log below"))
        else:
            self._say(f"Installed. {self._state.torch_build} Click 'Start local engine'.")

    # ------------------------------------------------------------------ models and jobs
    def refresh_models(self) -> None:
        if self.backend is not None:
            self._run("Listing models", self.backend.list_models, on_done=self._on_models)
        self._publish()

    def _on_models(self, models: list[ModelInfo]) -> None:
        self._models = list(models)
        ids = [m.model_id for m in models]
        self._set(models=tuple((m.model_id, m.describe()) for m in models),
                  model_id=self._state.model_id if self._state.model_id in ids else (ids[0] if ids else None))
        self._say(f"{len(models)} model(s) on the backend.")

    def _selected_model(self) -> ModelInfo | None:
        return next((m for m in self._models if m.model_id == self._state.model_id), None)

    def add_case(self) -> None:
        from BackSplitSlicer.case import export_case

        try:
            volume, segmentation = self._inputs()
            model = self._selected_model()
            backend = self._require_backend()
            case = export_case(volume, segmentation, schema=model.schema if model else None)
            self._run(f"Uploading case '{case.name}'", backend.add_case, case,
                      on_done=lambda case_id: self._say(f"Case added ({case_id})."))
        except Exception as e:  # noqa: BLE001
            self._error("Adding the case failed", e)
        self._publish()

    def fine_tune(self) -> None:
        try:
            backend = self._require_backend()
            model = self._selected_model()
            self._run("Starting training", backend.fine_tune, base_model=model.model_id if model else None,
                      iterations=self._state.iterations, train_new=self._state.train_new or model is None,
                      on_done=self._on_job, **self.training_options)
        except BackSplitError as e:
            self._error("Starting training failed", e)
        self._publish()

    def _require_backend(self) -> Backend:
        if self.backend is None or self._state.connection != CONNECTED:
            raise BackSplitError("not connected to a backend", "click Connect (Remote) or Start local engine (Local)")
        return self.backend

    def cancel(self) -> None:
        if self._job is not None and self.backend is not None:
            self._run("Cancelling", self.backend.cancel, self._job.job_id, on_done=self._on_job)
        self._publish()

    def _on_job(self, job: JobStatus) -> None:
        self._show_job(job)
        if job.finished:
            if job.state == "failed":
                self._error("Training failed", BackSplitError(job.error or "no reason given",
                                                              "read the server log, fix, and start again"))
            else:
                self.refresh_models()
        else:
            self._next_poll = self.clock() + POLL_S

    def _show_job(self, job: JobStatus) -> None:
        self._job = job
        self._set(job={**asdict(job), "fraction": job.fraction, "text": job.describe()}, status=job.describe())
        self._publish()

    def _on_poll_failed(self, error: BaseException) -> None:
        """One message, polling stops, Reconnect is offered."""
        self._set(connection=LOST, server_info="Connection lost.")
        self._error("Reading the training progress failed", error)

    def predict(self) -> None:
        import numpy as np

        from BackSplitLib.io import image_from_array
        from BackSplitSlicer.case import volume_geometry

        try:
            backend = self._require_backend()
            volume = self._node(self._state.volume_id)
            if volume is None:
                raise BackSplitError("choose a volume first", "use the Inputs section")
            from slicer.util import arrayFromVolume

            image = image_from_array(np.array(arrayFromVolume(volume), dtype=np.float32), volume_geometry(volume))
            model = self._selected_model()
            self._run("Predicting", backend.predict, image, model=model.model_id if model else "current",
                      classes=self._state.predict_auxiliary,
                      on_done=lambda result: self._on_prediction(volume.GetID(), result))
        except Exception as e:  # noqa: BLE001
            self._error("Prediction failed", e)
        self._publish()

    def _on_prediction(self, volume_id: str, result) -> None:
        from BackSplitSlicer.case import LESION_SEGMENT_NAME, import_prediction, prediction_node

        volume = self._node(volume_id)
        if volume is None:
            raise BackSplitError("the volume was removed before the prediction arrived")
        auxiliary = self._state.predict_auxiliary and result.classes is not None
        output = prediction_node(volume, self._node(self._state.output_id))
        created = import_prediction(result.classes if auxiliary else result.mask, volume, output,
                                    schema=result.schema if auxiliary else None, auxiliary=auxiliary)
        self._set(output_id=output.GetID())
        self._say(f"Prediction done: segment '{LESION_SEGMENT_NAME}'"
                  + (f" and {len(created) - 1} hidden auxiliary segment(s)." if auxiliary else "."))

    # ------------------------------------------------------------------ background work and the clock
    def _run(self, what: str, fn: Callable, *args: Any, on_done: Callable[[Any], None],
             on_error: Callable[[BaseException], None] | None = None, quiet: bool = False, **kwargs: Any) -> None:
        """Run ``fn`` in a thread; ``on_done(result)`` (or ``on_error``) runs in a later ``tick``. A quiet task
        (polls, probes) leaves the status line alone."""
        self._tasks.append(_Task(what, BackgroundCall(fn, *args, **kwargs), on_done, on_error))
        self._set(busy=tuple(t.what for t in self._tasks))
        if not quiet:
            self._say(f"{what}...")

    def tick(self) -> None:
        """Collect finished background calls, poll the job and the local engine's readiness. Never waits."""
        if self._tasks:  # lets worker threads run under PythonQt (see the module docstring); idle: no sleep
            time.sleep(GIL_SLICE_S)
        finished = [t for t in self._tasks if t.call.done]
        self._tasks = [t for t in self._tasks if not t.call.done]
        for task in finished:
            try:
                task.on_done(task.call.result(0))
            except BaseException as e:  # noqa: BLE001 (shown to the user, not swallowed)
                if task.on_error is not None:
                    task.on_error(e)
                else:
                    self._error(f"{task.what} failed", e)
        now = self.clock()
        if self._state.connection == STARTING and not self._pending("Starting the local engine"):
            self._probe(now)
        if (self._state.connection == CONNECTED and self._job is not None and not self._job.finished
                and now >= self._next_poll and not self._pending("Reading progress")):
            self._run("Reading progress", self.backend.status, self._job.job_id, on_done=self._on_job,
                      on_error=self._on_poll_failed, quiet=True)
        if self._installer is not None and self._state.connection == INSTALLING:
            self._set(install_log=self._installer.log())
        self._set(busy=tuple(t.what for t in self._tasks))
        self._publish()

    def _probe(self, now: float) -> None:
        backend = self.backend
        if now > self._ready_deadline:
            self._set(connection=DISCONNECTED, server_info="Not connected.")
            self._error("The local engine did not start", BackSplitError(
                f"it did not answer within {LOCAL_START_TIMEOUT_S:.0f} s", f"read {backend.log_path}"))
            return
        if now >= self._next_probe:
            self._next_probe = now + READY_PROBE_S

            def ready(is_ready: bool) -> None:
                if is_ready and self.backend is backend and self._state.connection == STARTING:
                    self._describe()

            def failed(error: BaseException) -> None:
                self._set(connection=DISCONNECTED, server_info="Not connected.")
                self._error("The local engine did not start", error)

            self._run("Starting the local engine", backend.is_ready, on_done=ready, on_error=failed, quiet=True)

    def _pending(self, what: str) -> bool:
        return any(t.what == what for t in self._tasks)

    # ------------------------------------------------------------------ what is possible now
    def _enabled(self) -> dict:
        busy = {t.what.split(" '")[0] for t in self._tasks}
        return enabled_actions(self._state, self.backend is not None,
                               self._job is not None and not self._job.finished, busy)

