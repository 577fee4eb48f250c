"""The panel's backend life cycle, without Qt: connect, check packages, install, start, probe, reconnect, stop.

``BackendLifecycle`` owns the backend object and the connection states (``panel_state``: disconnected,
checking, installing, starting, connecting, connected, lost). It belongs to one :class:`PanelController`
and reports through it: background work goes through the controller's task list (so ``tick`` collects it),
and the state, the status line and the messages are the controller's. The controller keeps the job, the
models, the scene and the inputs; this class keeps only what it takes to have a backend that answers.
"""

from __future__ import annotations

import secrets

from BackSplitLib.errors import BackSplitError

from BackSplitSlicer.backends import ENGINE_MODULE, Backend, BackgroundCall, LocalBackend, missing_packages
from BackSplitSlicer.panel_state import (CHECKING, CONNECTED, CONNECTING, DISCONNECTED, INSTALLING, LOST, SETTINGS,
                                         STARTING, Work)


READY_PROBE_S = 0.5  # local engine readiness
LOCAL_START_TIMEOUT_S = 120.0
RECENT_SERVERS = 8
INSTALL_QUESTION = ("Install the BackSplit engine's packages (PyTorch, MONAI and others) into Slicer's Python "
                    "now? This downloads several hundred MB and may take minutes.")


class BackendLifecycle:
    """The backend of one panel, from Connect to Stop. Handlers return at once; ``tick`` drives the probes."""

    def __init__(self, panel):  # its PanelController (not imported: the controller imports this module)
        self.panel = panel
        self.backend: Backend | None = None
        self.installer = None
        self._next_probe = self._ready_deadline = 0.0

    @property
    def _state(self):
        return self.panel._state

    # ------------------------------------------------------------------ connect
    def connect(self) -> None:
        """Connect (Remote) or check packages and start the local engine (Local)."""
        panel = self.panel
        if self.backend is not None:
            self.close()
        panel._forget_job()
        panel._forget_session()
        try:
            if self._state.backend_kind == "Remote":
                self._remember_server(self._state.server_url)
                self.backend = panel.backend_factory("Remote", url=self._state.server_url, token=panel._token,
                                                     ca_bundle=self._state.ca_bundle)
                self.describe()
            elif self._state.local_mode_note:
                raise BackSplitError(self._state.local_mode_note)
            else:
                self.backend = panel.backend_factory("Local", token=secrets.token_urlsafe(32),
                                                     data_folder=self._state.local_data_folder)
                panel._set(connection=CHECKING, server_info="Checking the local engine's packages...")
                panel._run(Work.check_packages, missing_packages, self.backend.python, self.backend.engine_path,
                           on_done=self._on_packages)
        except Exception as e:  # noqa: BLE001
            self.backend = None
            panel._set(connection=DISCONNECTED, server_info="Not connected.")
            panel._error("Connecting failed", e, action="connect")
        panel._publish()

    def _on_packages(self, missing: list[str]) -> None:
        panel = self.panel
        panel._set(missing_packages=tuple(missing))
        if missing:
            self.backend = None
            panel._set(connection=DISCONNECTED, server_info=f"Missing in Slicer's Python: {', '.join(missing)}.")
            what = ("the BackSplit engine (BackSplitLib.server) is not beside the module"
                    if ENGINE_MODULE in missing else f"the local engine needs {', '.join(missing)}")
            panel._error("Starting the local engine failed", BackSplitError(
                what, "click 'Install PyTorch and MONAI', or use a Remote server"), action="connect")
            return
        self.backend.start()
        self._ready_deadline = panel.clock() + LOCAL_START_TIMEOUT_S
        self._next_probe = panel.clock()
        panel._set(connection=STARTING, server_info="Starting the local engine...")
        panel._say("Starting the local engine...")

    def describe(self) -> None:
        """Open a session: who we are, the projects, the chosen project's description (one background call)."""
        self.panel._set(connection=CONNECTING, server_info="Connecting...")
        self.panel._run(Work.connect, self.backend.open_session, self._state.project, on_done=self._on_connected,
                        on_error=self._on_connect_failed)

    def _on_connected(self, session) -> None:
        panel = self.panel
        panel._set(connection=CONNECTED, server_info=session.description)
        panel._succeeded("connect", "Connected.")
        panel._on_session(session)
        panel._on_backend_ready()

    def _on_connect_failed(self, error: BaseException) -> None:
        self.panel._set(connection=LOST if self.panel._job is not None else DISCONNECTED, server_info="Not connected.")
        self.panel._error("Connecting failed", error, action="connect")

    def reconnect(self) -> None:
        """After a lost connection: try the same backend again; a running job is picked up where it is."""
        if self.backend is None:
            self.connect()
            return
        if isinstance(self.backend, LocalBackend) and not self.backend.running:
            job = self.panel._job  # the new engine requeues it (it resumes from its checkpoint): keep following it
            self.connect()
            if job is not None:
                self.panel._show_job(job)
            return
        self.describe()
        self.panel._publish()

    # ------------------------------------------------------------------ stop
    def stop(self) -> None:
        """The user's explicit Stop: drop the backend (a local engine is stopped) and who we were there."""
        self.close()
        self.panel._forget_session()
        self.panel._set(connection=DISCONNECTED, server_info="Not connected.")

    def close(self) -> None:
        backend, self.backend = self.backend, None
        # Late answers of the old backend are dropped; a running pip install keeps its own process.
        self.panel._tasks = [t for t in self.panel._tasks if t.work is Work.install]
        if backend is not None:
            BackgroundCall(backend.close)  # a local engine may take seconds to finish a checkpoint

    def shutdown(self) -> None:
        """The application quits: stop a local engine without waiting for it."""
        if isinstance(self.backend, LocalBackend):
            self.backend.terminate()
        self.backend = None

    def _remember_server(self, url: str) -> None:
        recent = [url, *[u for u in self._state.recent_servers if u != url]][:RECENT_SERVERS]
        self.panel.settings.set(SETTINGS["server_url"], url)
        self.panel.settings.set(SETTINGS["recent_servers"], recent)
        self.panel._set(recent_servers=tuple(recent))

    # ------------------------------------------------------------------ install (Local mode)
    def install(self) -> None:
        """Install what Local mode needs into this Python, with the output in ``install_log``."""
        from BackSplitSlicer.install import PipInstall

        panel = self.panel
        if not panel.ask(INSTALL_QUESTION):
            return
        try:
            python = panel.backend_factory("Local", data_folder=self._state.local_data_folder).python
            self.installer = PipInstall(python, wheel_folder=self._state.wheel_folder or None)
            panel._set(connection=INSTALLING, install_log=self.installer.log())
            panel._run(Work.install, self.installer.wait, on_done=self._on_installed)
        except Exception as e:  # noqa: BLE001
            panel._error("Installing the local engine's packages failed", e, action="install")
        panel._publish()

    def _on_installed(self, returncode: int) -> None:
        panel = self.panel
        torch = self.installer.torch
        panel._set(install_log=self.installer.log(), connection=DISCONNECTED,
                   torch_build=torch.describe() if torch else "")
        if returncode != 0:
            panel._error("Installing the local engine's packages failed", BackSplitError(
                f"pip exited with code {returncode}: {self.installer.log_tail()}",
                "read the install log below; offline, set a wheel folder; behind a proxy, set HTTPS_PROXY"),
                action="install")
            return
        panel._run(Work.check_packages, missing_packages, self.installer.python,
                   on_done=self._on_checked_after_install)

    def _on_checked_after_install(self, missing: list[str]) -> None:
        panel = self.panel
        panel._set(missing_packages=tuple(missing))
        if missing:
            panel._error("Installing the local engine's packages failed", BackSplitError(
                f"pip finished but Slicer's Python still lacks {', '.join(missing)}", "read the install log below"),
                action="install")
        else:
            panel._succeeded("install", f"Installed. {self._state.torch_build} Click 'Start local engine'.")

    # ------------------------------------------------------------------ the clock
    def tick(self, now: float) -> None:
        """Probe a starting local engine; copy a running install's log."""
        if self._state.connection == STARTING and not self.panel._pending(Work.start_engine):
            self._probe(now)
        if self.installer is not None and self._state.connection == INSTALLING:
            self.panel._set(install_log=self.installer.log())

    def _probe(self, now: float) -> None:
        panel, backend = self.panel, self.backend
        if now > self._ready_deadline:
            panel._set(connection=DISCONNECTED, server_info="Not connected.")
            panel._error("The local engine did not start", BackSplitError(
                f"it did not answer within {LOCAL_START_TIMEOUT_S:.0f} s", f"read {backend.log_path}"),
                action="connect")
            return
        if now >= self._next_probe:
            self._next_probe = now + READY_PROBE_S

            def ready(is_ready: bool) -> None:
                if is_ready and self.backend is backend and self._state.connection == STARTING:
                    self.describe()

            def failed(error: BaseException) -> None:
                panel._set(connection=DISCONNECTED, server_info="Not connected.")
                panel._error("The local engine did not start", error, action="connect")

            panel._run(Work.start_engine, backend.is_ready, on_done=ready, on_error=failed, quiet=True)

    @property
    def connected(self) -> bool:
        return self.backend is not None and self._state.connection == CONNECTED
