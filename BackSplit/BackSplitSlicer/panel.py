"""The BackSplit panel's behaviour, without Qt: one controller that two faces bind to.

``PanelController`` owns what the panel shows and does: the inputs (volume, segmentation, output), the rows
of the roles table (live with segments added, renamed or removed), the current job and its progress, the
models, which actions are enabled, and the messages for the user. The backend's life cycle (connect, probe,
install, start, reconnect, stop) is its :class:`~BackSplitSlicer.backend_lifecycle.BackendLifecycle`.
The Slicer widget (``Widget.py``) and the browser app bind to it: they call its handlers on user actions,
call :meth:`PanelController.tick` from a timer, and redraw from :meth:`PanelController.state` (plain data)
whenever an observer callback says it changed. Nothing here touches ``slicer.mrmlScene``, ``slicer.modules``,
``slicer.app`` or ``qt``: the scene, a settings store, the backend factory and the way to ask the user are
injected.

Messages: an error names its action and is cleared when that action later succeeds; a warning (a model kept
but not promoted) stays until the user acts on it.

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
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from BackSplitLib.errors import BackSplitError
from BackSplitLib.permissions import DEFAULT_PROJECT
from BackSplitLib.vocabulary import DEFAULT_SERVER_URL, JobKind, default_iterations

from BackSplitSlicer.backend_lifecycle import BackendLifecycle
from BackSplitSlicer.backends import Backend, BackgroundCall, JobStatus, ModelInfo, make_backend
from BackSplitSlicer.panel_projects import ProjectActions
from BackSplitSlicer.panel_scene import SceneActions
from BackSplitSlicer.panel_state import (ACTIONS, BACKENDS, CHECKING, CONNECTED, CONNECTING, DISCONNECTED,  # noqa: F401
                                         INSTALLING, LOCAL_MODE_NOTE, LOST, SETTINGS, STARTING, MemorySettings,
                                         Message, PanelState, RoleRow, Settings, Work, as_list, enabled_actions,
                                         local_mode_supported, refusal_text)
from BackSplitSlicer.roles import role_rows, set_segment_role, write_default_roles
from BackSplitSlicer.segment_colors import color_new_segments

TICK_MS = 100  # how often a binding calls tick()
GIL_SLICE_S = 0.004  # GIL released per tick so worker threads progress under PythonQt
POLL_S = 1.0  # job progress


class _Task:
    def __init__(self, work: Work, label: str, call: BackgroundCall, on_done: Callable[[Any], None],
                 on_error: Callable[[BaseException], None] | None):
        self.work, self.label, self.call, self.on_done, self.on_error = work, label, call, on_done, on_error


class PanelController(SceneActions, ProjectActions):
    """The panel's behaviour. Handlers return at once; :meth:`tick` collects background results. The handlers
    that work on the scene (auxiliary structures, fill between slices, predictions) are in
    :class:`~BackSplitSlicer.panel_scene.SceneActions`; who is signed in and the project picker in
    :class:`~BackSplitSlicer.panel_projects.ProjectActions`."""

    def __init__(self, scene, settings: Settings, backend_factory: Callable[..., Backend] = make_backend,
                 ask: Callable[[str], bool] = lambda question: False, training_options: dict | None = None,
                 clock: Callable[[], float] = time.monotonic, python_version: tuple = tuple(sys.version_info[:2])):
        self.scene, self.settings, self.backend_factory, self.ask = scene, settings, backend_factory, ask
        self.training_options = dict(training_options or {})  # extra job fields (the self-test keeps jobs tiny)
        self.clock = clock
        self.lifecycle = BackendLifecycle(self)
        self._token: str | None = None  # typed by the user (Remote); never stored
        self._job: JobStatus | None = None
        self._models: list[ModelInfo] = []
        self._project_rows: list[dict] = []
        self._tasks: list[_Task] = []
        self._observers: list[Callable[[PanelState], None]] = []
        self._next_poll = 0.0
        self._promotion_said: str | None = None  # the job whose model's promotion was said
        self._message_serial = 0
        self._published: PanelState | None = None
        self._segmentation_node = None
        self._segmentation_tags: list[int] = []
        self._auxiliary_segment_ids: list[str] = []  # the last prediction's hidden auxiliary segments
        self._auxiliary_node_id: str | None = None  # and the node that holds them
        self._scene_tags = [scene.AddObserver(scene.EndCloseEvent, self._on_scene_closed),
                            scene.AddObserver(scene.NodeRemovedEvent, self._on_node_removed)]
        note = "" if local_mode_supported(python_version) else LOCAL_MODE_NOTE.format(
            version=".".join(map(str, python_version)))
        get = settings.get
        iterations = get(SETTINGS["iterations"], None)
        self._state = PanelState(
            backend_kind=str(get(SETTINGS["backend"], "Local" if not note else "Remote")),
            server_url=str(get(SETTINGS["server_url"], DEFAULT_SERVER_URL)),
            recent_servers=tuple(as_list(get(SETTINGS["recent_servers"], []))),
            ca_bundle=str(get(SETTINGS["ca_bundle"], "")),
            local_data_folder=str(get(SETTINGS["local_data_folder"], str(Path.home() / "BackSplit"))),
            wheel_folder=str(get(SETTINGS["wheel_folder"], "")),
            iterations=int(iterations) if iterations not in (None, "", 0, "0") else None, local_mode_note=note,
            project=str(get(SETTINGS["project"], None) or DEFAULT_PROJECT))
        self.enter()

    @property
    def backend(self) -> Backend | None:
        return self.lifecycle.backend

    # ------------------------------------------------------------------ observing
    def observe(self, callback: Callable[[PanelState], None]) -> None:
        """``callback(state)`` after every change (called on the thread that calls handlers and ``tick``)."""
        self._observers.append(callback)

    def state(self) -> PanelState:
        return replace(self._state, roles=tuple(role_rows(self._segmentation_node)), enabled=self._enabled(),
                       iterations_default=default_iterations(self._job_kind()))

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

    def _message(self, level: str, text: str, hint: str | None = None, action: str | None = None) -> None:
        self._message_serial += 1
        self._set(message=Message(self._message_serial, level, text, hint, action))

    def _error(self, what: str, error: BaseException, action: str | None = None) -> None:
        """One message for the user (with the hint); a stack trace only for errors that are not ours. The
        status line says only what failed: the reason is in the message, shown once."""
        if getattr(error, "status", None) == 403:  # the role does not allow it: the user's words, not the body
            text, hint = f"{what}: {refusal_text(self._state.me, self._state.project, action)}", None
            self._recheck_identity()
        elif isinstance(error, BackSplitError):
            text, hint = f"{what}: {error.message}", error.hint
        else:
            text, hint = f"{what}: {type(error).__name__}: {error}", None
            logging.getLogger(__name__).error(what, exc_info=error)  # the traceback is for developers
        self._say(f"{what}.")
        self._message("error", text, hint, action)

    def _succeeded(self, action: str, status: str) -> None:
        """``action`` worked: say so, and clear a message about an earlier attempt of it."""
        message = self._state.message
        if message is not None and message.action == action:
            self._set(message=None)
        self._say(status)

    def dismiss_message(self) -> None:
        self._set(message=None)
        self._publish()
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
        self.lifecycle.shutdown()

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
            self._succeeded("set_role", f"'{segment.GetName()}' is {role.capitalize()}.")
        except BackSplitError as e:
            self._error("Setting the role failed", e, action="set_role")
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
                self._segmentation_tags.append(node.AddObserver(event, self._on_segments_changed))
            color_new_segments(node)  # before the role tags mark every segment as seen
            write_default_roles(node)
        self._set(segmentation_id=node.GetID() if node is not None else None)

    def _on_segments_changed(self, caller=None, event=None) -> None:
        color_new_segments(self._segmentation_node)  # distinct, or the terminology colour of the name
        write_default_roles(self._segmentation_node)  # the role a row shows is the one the file keeps
        self._publish()

    def _node(self, node_id: str | None):
        return self.scene.GetNodeByID(node_id) if node_id else None

    def _first(self, class_name: str, exclude: str = "", exclude_name: str = ""):
        for i in range(self.scene.GetNumberOfNodesByClass(class_name)):
            node = self.scene.GetNthNodeByClass(i, class_name)
            if not (exclude and node.IsA(exclude)) and not (exclude_name and node.GetName().startswith(exclude_name)):
                return node
        return None

    def _inputs(self):
        volume, segmentation = self._node(self._state.volume_id), self._segmentation_node
        if volume is None or segmentation is None:
            raise BackSplitError("choose a volume and a segmentation first", "use the Inputs section")
        return volume, segmentation

    # ------------------------------------------------------------------ backend settings
    def set_backend_kind(self, kind: str) -> None:
        """The user picks Local or Remote: a running backend of the other kind stops (the user's choice)."""
        if kind not in BACKENDS or kind == self._state.backend_kind:
            return
        if self.lifecycle.backend is not None:
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
        """Training settings; ``iterations`` 0 (or below) goes back to the recipe's default."""
        if iterations is not None:
            count = int(iterations) if int(iterations) > 0 else None
            self.settings.set(SETTINGS["iterations"], count or 0)
            self._set(iterations=count)
        if train_new is not None:
            self._set(train_new=bool(train_new))
        if predict_auxiliary is not None:
            self._set(predict_auxiliary=bool(predict_auxiliary))
        self._publish()

    def set_case_mode(self, annotated_slices_only: bool | None) -> None:
        """Add case's mode: True keeps only annotated slices (the rest becomes ``ignore``), False the whole
        volume, None decides per case from how the target is painted (``case.sparse_annotation``)."""
        self._set(annotated_slices_only=annotated_slices_only)
        self._publish()

    def select_model(self, model_id: str | None) -> None:
        self._set(model_id=model_id or None)
        self._publish()

    def _job_kind(self) -> str:
        """What Fine-tune will ask for: a new model when the user says so or there is none to fine-tune."""
        return JobKind.train if self._state.train_new or not self._models else JobKind.finetune

    # ------------------------------------------------------------------ the backend (BackendLifecycle)
    def connect(self) -> None:
        self.lifecycle.connect()

    def reconnect(self) -> None:
        self.lifecycle.reconnect()

    def install(self) -> None:
        self.lifecycle.install()

    def stop(self) -> None:
        """The user's explicit Stop: drop the backend (a local engine is stopped), forget the job."""
        self.lifecycle.stop()
        self._forget_job()
        self._say("Stopped.")
        self._publish()

    def _forget_job(self) -> None:
        self._job, self._models = None, []
        self._set(job=None, models=(), model_id=None, unpromoted=None)

    def _on_backend_ready(self) -> None:
        """Called by the life cycle once the backend answers (and ``_on_session`` said who and where): follow a
        running job, list the models."""
        if self._job is not None and not self._job.finished:
            self._next_poll = self.clock()
        if self.state().enabled["refresh_models"]:  # a role in the project (GET /me)
            self.refresh_models()

    # ------------------------------------------------------------------ models and jobs
    def refresh_models(self) -> None:
        """The backend's models and cases (for the pickers), and its projects."""
        if self.backend is not None:
            self._run(Work.list_models, self.backend.list_models, on_done=self._on_models)
            self._run(Work.list_cases, self.backend.list_cases, on_done=self._on_cases, quiet=True)
            self.refresh_projects()
        self._publish()

    def _on_cases(self, cases: list[dict]) -> None:
        from BackSplitSlicer.backends import describe_case

        ids = [c["id"] for c in cases]
        chosen = self._state.case_ids
        self._set(cases=tuple((c["id"], describe_case(c)) for c in cases),
                  case_ids=tuple(i for i in chosen if i in ids) or None if chosen is not None else None)

    def select_cases(self, case_ids: list[str] | None) -> None:
        """The cases Fine-tune trains on; None or empty: every case on the server."""
        self._set(case_ids=tuple(case_ids) if case_ids else None)
        self._publish()

    def _on_models(self, models: list[ModelInfo]) -> None:
        self._models = list(models)
        ids = [m.model_id for m in models]
        self._set(models=tuple((m.model_id, m.describe()) for m in models),
                  model_id=self._state.model_id if self._state.model_id in ids else (ids[0] if ids else None))
        self._say(f"{len(models)} model(s) on the backend.")
        self._check_promotion()

    def _check_promotion(self) -> None:
        """After a job succeeded: its model is current (the server promoted it) or kept but not used. The
        server's record decides (the model's ``current`` mark); the reason is its validation Dice."""
        job = self._job
        model = next((m for m in self._models if job is not None and m.model_id == job.model_id), None)
        if model is None or job.state != "succeeded" or self._promotion_said == job.job_id:
            return  # no finished job's model listed yet, or said once already
        self._promotion_said = job.job_id
        if model.current:  # promoted: Predict uses it from now on
            self._set(unpromoted=None, model_id=model.model_id)
            return
        dice = model.metrics.get("best_val_dice", model.metrics.get("val_dice"))
        reason = (f"its validation lesion Dice was {dice:.2f}" if isinstance(dice, (int, float))
                  else "the server did not promote it")
        self._set(unpromoted={"model_id": model.model_id, "reason": reason})
        self._message("warning", f"Model {model.model_id} kept but not used: {reason}. Predict still uses the "
                      "current model.", "train longer, or click 'Use this model' to make it current anyway",
                      action="promote")
        self._say(f"Training done: model {model.model_id} kept but not used ({reason}).")

    def promote(self) -> None:
        """Make the last job's unpromoted model current (the user's "use it anyway")."""
        try:
            backend = self._require_backend()
            if self._state.unpromoted is None:
                raise BackSplitError("there is no unpromoted model to use")
            model_id = self._state.unpromoted["model_id"]
            self._run(Work.promote, backend.promote, model_id, on_done=lambda _: self._on_promoted(model_id))
        except BackSplitError as e:
            self._error("Promoting the model failed", e, action="promote")
        self._publish()

    def _on_promoted(self, model_id: str) -> None:
        self._set(unpromoted=None, model_id=model_id)
        self._succeeded("promote", f"Model {model_id} is now the current model.")
        self.refresh_models()

    def _selected_model(self) -> ModelInfo | None:
        return next((m for m in self._models if m.model_id == self._state.model_id), None)

    def add_case(self) -> None:
        from BackSplitSlicer.case import export_case

        try:
            volume, segmentation = self._inputs()
            model = self._selected_model()
            backend = self._require_backend()
            case = export_case(volume, segmentation, schema=model.schema if model else self._project_schema(),
                               annotated_slices_only=self._state.annotated_slices_only)
            note = f" {case.annotation.describe()}" if case.annotation is not None else ""
            self._run(Work.upload_case, backend.add_case, case, label=f"Uploading case '{case.name}'",
                      on_done=lambda case_id: self._on_case_added(case_id, note))
        except Exception as e:  # noqa: BLE001
            self._error("Adding the case failed", e, action="add_case")
        self._publish()

    def _on_case_added(self, case_id: str, note: str) -> None:
        self._succeeded("add_case", f"Case added ({case_id}).{note}")
        if self._state.case_ids is not None:  # a chosen set grows by the case just added
            self._set(case_ids=(*self._state.case_ids, case_id))
        self._run(Work.list_cases, self.backend.list_cases, on_done=self._on_cases, quiet=True)
        self.refresh_projects()  # the picker's case count

    def fine_tune(self) -> None:
        try:
            backend = self._require_backend()
            model = self._selected_model()
            self._run(Work.start_training, backend.fine_tune, base_model=model.model_id if model else None,
                      iterations=self._state.iterations or default_iterations(self._job_kind()),
                      train_new=self._state.train_new or model is None, on_done=self._on_job,
                      cases=list(self._state.case_ids or ()) or "all", **self.training_options)
        except BackSplitError as e:
            self._error("Starting training failed", e, action="fine_tune")
        self._publish()

    def _require_backend(self) -> Backend:
        if not self.lifecycle.connected:
            raise BackSplitError("not connected to a backend", "click Connect (Remote) or Start local engine (Local)")
        return self.backend

    def cancel(self) -> None:
        if self._job is not None and self.backend is not None:
            self._run(Work.cancel, self.backend.cancel, self._job.job_id, on_done=self._on_job)
        self._publish()

    def _on_job(self, job: JobStatus) -> None:
        self._show_job(job)
        if job.finished:
            if job.state == "failed":
                self._error("Training failed", BackSplitError(job.error or "no reason given",
                                                              "read the server log, fix, and start again"),
                            action="fine_tune")
            else:
                if job.state == "succeeded":
                    self._succeeded("fine_tune", job.describe())
                self.refresh_models()
        else:
            self._next_poll = self.clock() + POLL_S

    def _show_job(self, job: JobStatus) -> None:
        curve = self._state.curve if self._job is not None and self._job.job_id == job.job_id else ()
        if job.iteration and (not curve or curve[-1][0] != job.iteration):
            curve = (*curve, (job.iteration, job.loss, job.val_dice))
        self._job = job
        self._set(job={**asdict(job), "fraction": job.fraction, "text": job.describe()}, status=job.describe(),
                  curve=curve)
        self._publish()

    def _on_poll_failed(self, error: BaseException) -> None:
        """One message, polling stops, Reconnect is offered."""
        self._set(connection=LOST, server_info="Connection lost.")
        self._error("Reading the training progress failed", error, action="connect")

    # ------------------------------------------------------------------ background work and the clock
    def _run(self, work: Work, fn: Callable, *args: Any, on_done: Callable[[Any], None],
             on_error: Callable[[BaseException], None] | None = None, quiet: bool = False, label: str = "",
             **kwargs: Any) -> None:
        """Run ``fn`` in a thread; ``on_done(result)`` (or ``on_error``) runs in a later ``tick``. A quiet task
        (polls, probes) leaves the status line alone."""
        self._tasks.append(_Task(work, label or work.value, BackgroundCall(fn, *args, **kwargs), on_done, on_error))
        self._set(busy=tuple(t.label for t in self._tasks))
        if not quiet:
            self._say(f"{label or work.value}...")

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
                    self._error(f"{task.work.value} failed", e, action=_ACTION_OF.get(task.work))
        now = self.clock()
        self.lifecycle.tick(now)
        if (self.lifecycle.connected and self._job is not None and not self._job.finished
                and now >= self._next_poll and not self._pending(Work.read_progress)):
            self._run(Work.read_progress, self.backend.status, self._job.job_id, on_done=self._on_job,
                      on_error=self._on_poll_failed, quiet=True)
        self._set(busy=tuple(t.label for t in self._tasks))
        self._publish()

    def _pending(self, work: Work) -> bool:
        return any(t.work is work for t in self._tasks)

    # ------------------------------------------------------------------ what is possible now
    def _enabled(self) -> dict:
        return enabled_actions(self._state, self.backend is not None,
                               self._job is not None and not self._job.finished, {t.work for t in self._tasks})


# The action whose error message a failed task's message belongs to (cleared when that action succeeds).
_ACTION_OF = {Work.upload_case: "add_case", Work.start_training: "fine_tune", Work.cancel: "fine_tune",
              Work.predict: "predict", Work.promote: "promote", Work.list_models: "refresh_models",
              Work.connect: "connect", Work.check_packages: "connect", Work.install: "install",
              Work.list_cases: "refresh_models", Work.list_projects: "refresh_models",
              Work.create_project: "create_project"}
