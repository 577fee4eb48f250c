"""Where training and prediction run: a BackSplit server, remote or started locally, behind one interface.

``RemoteBackend`` talks to a server (``backsplit serve``) with the engine's standard-library client, so a
Slicer without PyTorch can fine-tune on a GPU machine. ``LocalBackend`` starts that same server on this
machine as a separate process with Slicer's Python (``python -m BackSplitLib serve`` on a free loopback
port, with a per-launch random token in the environment, never on the command line) and then is a
``RemoteBackend`` pointed at it: one code path, and the Slicer UI never waits for training. Both offer: ``add_case``, ``fine_tune``, ``status``, ``cancel``, ``list_models``, ``predict``.
``open_session`` reads who the token is (``GET /me``) and the server's projects (issue 24); the local engine
has no projects.

Nothing here imports Qt; the panel controller (``panel.py``) runs the slow calls through
:class:`BackgroundCall` and collects them from its ``tick``.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import SimpleITK as sitk

from BackSplitLib.client import TERMINAL_STATES, TOKEN_ENV, BackSplitClient, BackSplitClientError
from BackSplitLib.errors import BackSplitError
from BackSplitLib.io import read_image, write_image
from BackSplitLib.permissions import DEFAULT_PROJECT, Action, may
from BackSplitLib.run_folder import read_prediction_bundle
from BackSplitLib.schema import LabelSchema
from BackSplitLib.vocabulary import DEFAULT_HOST, DEFAULT_SERVER_URL, default_iterations

from BackSplitSlicer.case import Case
from BackSplitSlicer.install import requirement_lines, requirement_names
from BackSplitSlicer.processes import default_python, popen, run
from BackSplitSlicer.backend_session import LOCAL_PROJECTS_NOTE, SINGLE_TOKEN_ME, Session, pick_project

ENGINE_MODULE = "BackSplitLib.server"
# Tells the local engine (and its workers) to exit when our end of their stdin closes: no orphans.
EXIT_ON_STDIN_EOF_ENV = "BACKSPLIT_EXIT_ON_STDIN_EOF"


_REQUIRED = object()  # RemoteBackend._call: a 404 is an error


class BackendError(BackSplitError):
    """The backend cannot do what was asked (server unreachable, refused the request, local server died).
    ``status``: the server's HTTP status when it refused (403: the user's role does not allow it)."""

    def __init__(self, message: str, hint: str | None = None, status: int | None = None):
        super().__init__(message, hint)
        self.status = status


# ------------------------------------------------------------------------------------------- records
@dataclass(frozen=True)
class JobStatus:
    """A training job as the server reports it."""

    job_id: str
    state: str
    iteration: int = 0
    total_iterations: int = 0
    loss: float | None = None
    val_dice: float | None = None
    eta_s: float | None = None
    error: str | None = None
    model_id: str | None = None

    @classmethod
    def from_json(cls, job: dict) -> JobStatus:
        return cls(job_id=job["id"], state=job["state"], iteration=int(job.get("iteration") or 0),
                   total_iterations=int(job.get("total_iterations") or 0), loss=job.get("loss"),
                   val_dice=job.get("val_dice"), eta_s=job.get("eta_s"), error=job.get("error"),
                   model_id=job.get("model_id"))

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def fraction(self) -> float:
        """Progress in [0, 1] for a progress bar."""
        if self.state == "succeeded":
            return 1.0
        return min(1.0, self.iteration / self.total_iterations) if self.total_iterations else 0.0

    def describe(self) -> str:
        """One line for the status label: state, iteration, loss, validation Dice, time left."""
        if self.state == "failed":
            return f"Training failed: {self.error or 'no reason given'}"
        parts = [self.state.capitalize()]
        if self.total_iterations:
            parts.append(f"iteration {self.iteration}/{self.total_iterations}")
        if self.loss is not None:
            parts.append(f"loss {self.loss:.3f}")
        if self.val_dice is not None:
            parts.append(f"validation Dice {self.val_dice:.3f}")
        if self.eta_s is not None and not self.finished:
            parts.append(f"about {_duration(self.eta_s)} left")
        if self.state == "succeeded" and self.model_id:
            parts.append(f"model {self.model_id}")
        return ", ".join(parts)


@dataclass(frozen=True)
class ModelInfo:
    """A model version on the server."""

    model_id: str
    schema: LabelSchema | None
    current: bool = False
    source: str = ""
    parent: str | None = None
    metrics: dict = field(default_factory=dict)
    created: float | None = None
    cases: int = 0

    @classmethod
    def from_json(cls, model: dict) -> ModelInfo:
        schema = None
        if model.get("schema"):
            try:
                schema = LabelSchema.from_dict(model["schema"], f"model {model['id']}")
            except BackSplitError:
                schema = None
        return cls(model_id=model["id"], schema=schema, current=bool(model.get("current")),
                   source=model.get("source") or "", parent=model.get("parent"), metrics=model.get("metrics") or {},
                   created=model.get("created"), cases=len(model.get("cases") or []))

    def describe(self) -> str:
        """Text for the model picker: id, current mark, date, origin, validation Dice, cases and classes."""
        details = [d for d in ("current" if self.current else "", _date(self.created), self.source) if d]
        dice = self.metrics.get("val_dice", self.metrics.get("best_val_dice"))
        if isinstance(dice, (int, float)):
            details.append(f"validation Dice {dice:.2f}")
        if self.cases:
            details.append(f"{self.cases} case{'s' if self.cases != 1 else ''}")
        if self.schema is not None:
            details.append(f"{self.schema.num_classes} classes")
        return f"{self.model_id} ({', '.join(details)})" if details else self.model_id


def describe_case(case: dict) -> str:
    """A server case for a picker: name, date, classes and the lesion's size (not an 8-character id)."""
    spacing = case.get("spacing") or (1.0, 1.0, 1.0)
    lesion_ml = int(case.get("target_voxels") or 0) * float(spacing[0]) * float(spacing[1]) * float(spacing[2]) / 1000
    classes = [c for c in case.get("classes") or [] if c != "background"]
    return (f"{case.get('name', '?')} ({_date(case.get('created'))}; {', '.join(classes) or 'no classes'}; "
            f"lesion {lesion_ml:.2f} mL)")


def _date(timestamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp)) if timestamp else ""


@dataclass
class PredictionResult:
    """The server's answer: the lesion mask and, when asked for, the full class map and its schema."""

    mask: sitk.Image
    classes: sitk.Image | None = None
    schema: LabelSchema | None = None
    model_id: str | None = None


# ------------------------------------------------------------------------------------------- backends
class Backend:
    """The interface the widget uses; all calls may take seconds (network), none waits for training."""

    def describe(self, with_models: bool = True) -> str:
        raise NotImplementedError

    def add_case(self, case: Case, allow_empty_target: bool = False, modality: str = "CT") -> str:
        raise NotImplementedError

    def fine_tune(self, base_model: str | None = "current", iterations: int | None = None, train_new: bool = False,
                  **options: Any) -> JobStatus:
        raise NotImplementedError

    def status(self, job_id: str) -> JobStatus:
        raise NotImplementedError

    def cancel(self, job_id: str) -> JobStatus:
        raise NotImplementedError

    def list_models(self) -> list[ModelInfo]:
        raise NotImplementedError

    def list_cases(self) -> list[dict]:
        """The server's case records (``describe_case`` gives a picker's text)."""
        raise NotImplementedError

    def promote(self, model_id: str) -> ModelInfo:
        """Make ``model_id`` the current model."""
        raise NotImplementedError

    def predict(self, image: Case | sitk.Image, model: str = "current", classes: bool = False) -> PredictionResult:
        raise NotImplementedError

    def open_session(self, project: str) -> Session:
        """Connect: who we are, the projects, and the project every later call goes to."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the backend holds (the local server process)."""


class RemoteBackend(Backend):
    """A BackSplit server at ``url`` (token from the server admin; none for a loopback --no-auth server)."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 30.0, retries: int = 3,
                 ca_bundle: str | Path | None = None):
        try:
            self.client = BackSplitClient(url, token=token or None, timeout=timeout, retries=retries,
                                          ca_file=ca_bundle or None)
        except BackSplitClientError as e:
            raise BackendError(e.detail, "use an address like https://gpu-server:8765") from None
        self.url = self.client.server

    # ---------------------------------------------------------------- calls
    def _call(self, what: str, fn: Callable, *args, absent: Any = _REQUIRED, **kwargs):
        """Run a client call; server and connection errors become one-line BackendErrors for the user
        (a 404 returns ``absent`` when given: a route that a server from before issue 24 lacks)."""
        try:
            return fn(*args, **kwargs)
        except BackSplitClientError as e:
            if e.status == 404 and absent is not _REQUIRED:
                return absent
            raise BackendError(f"{what} failed: {e.detail}", _hint_for(e, self.url), e.status) from None

    # ---------------------------------------------------------------- who and which project (issue 24)
    @property
    def project(self) -> str:
        """The project of every case, job, model and predict call (the client's)."""
        return self.client.project

    @project.setter
    def project(self, name: str) -> None:
        try:
            self.client.project = name
        except BackSplitClientError as e:
            raise BackendError(e.detail, "pick a project from the list") from None

    def me(self) -> dict:
        """``GET /me``: who the token is and their role per project; a server without /me (404, from before
        issue 24) is today's single token, an admin."""
        return self._call("reading who you are", self.client.me, absent=dict(SINGLE_TOKEN_ME))

    def list_projects(self) -> list[dict] | None:
        """The server's projects (name, target, current_model, counts); None when it has none (404)."""
        return self._call("listing projects", self.client.list_projects, absent=None)

    def create_project(self, name: str, schema: LabelSchema) -> dict:
        """A new project with ``schema``; a name taken (409) or refused (422) says what to do."""
        try:
            return self.client.create_project(name, schema)
        except BackSplitClientError as e:
            hints = {409: "pick it in the Project list, or choose another name",
                     422: "use 1 to 64 lower-case letters, digits, '-' or '_' (e.g. liver-mets), and give the "
                          "lesion segment the role Target"}
            raise BackendError(f"creating project {name!r} failed: {e.detail}",
                               hints.get(e.status) or _hint_for(e, self.url), e.status) from None

    def open_session(self, project: str) -> Session:
        """Who we are, the projects, and ``project`` when the server has it (else the default project);
        then the server's description in that project."""
        me, projects = self.me(), self.list_projects()
        if not isinstance(me, dict) or not isinstance(projects, (list, type(None))):
            raise BackendError(f"the server at {self.url} answered GET /me or GET /projects in a form this panel "
                               "does not know", "check that the address is a BackSplit server's")
        chosen, note = pick_project(project, projects, me)
        self.project = chosen
        return Session(self.describe(with_models=may(me, chosen, Action.read)), me, projects, chosen, note)

    def health(self) -> dict:
        return self._call("connecting to the server", self.client.health)

    def describe(self, with_models: bool = True) -> str:
        """One line about the server (and its models in the client's project, when ``with_models``)."""
        info = self.health()
        if not with_models:  # no role in the project: its models are not ours to list
            return f"Connected to {self.url}: device {info.get('device', '?')}, queue {info.get('queue_length', 0)}."
        models = self.list_models()
        current = next((m.model_id for m in models if m.current), None)
        return (f"Connected to {self.url}: device {info.get('device', '?')}, {len(models)} model(s)"
                + (f", current {current}" if current else "") + f", queue {info.get('queue_length', 0)}.")

    def add_case(self, case: Case, allow_empty_target: bool = False, modality: str = "CT") -> str:
        """Upload the case (image, label and schema, written losslessly as NRRD); returns the case id."""
        with tempfile.TemporaryDirectory(prefix="BackSplit-upload-") as tmp:
            files = case.write(tmp)
            record = self._call("uploading the case", self.client.upload_case, files.image, files.label,
                                case.schema, allow_empty_target=allow_empty_target, modality=modality)
        return record["id"]

    def fine_tune(self, base_model: str | None = "current", iterations: int | None = None, train_new: bool = False,
                  **options: Any) -> JobStatus:
        """Queue training on all the server's cases: fine-tune ``base_model``, or train new.

        With no model on the server yet there is nothing to fine-tune, so the first run trains a new one.
        ``iterations`` None: the job kind's default (``vocabulary.default_iterations``).
        """
        if not train_new and not self.list_models():
            train_new = True
        kind = "train" if train_new else "finetune"
        job = self._call("starting training", self.client.create_job, kind,
                         base_model=None if train_new else (base_model or "current"),
                         iterations=int(iterations or default_iterations(kind)), **options)
        return JobStatus.from_json(job)

    def status(self, job_id: str) -> JobStatus:
        return JobStatus.from_json(self._call("reading the job's progress", self.client.get_job, job_id))

    def cancel(self, job_id: str) -> JobStatus:
        return JobStatus.from_json(self._call("cancelling the job", self.client.cancel_job, job_id))

    def list_cases(self) -> list[dict]:
        return self._call("listing cases", self.client.list_cases)

    def list_models(self) -> list[ModelInfo]:
        models = [ModelInfo.from_json(m) for m in self._call("listing models", self.client.list_models)]
        return sorted(models, key=lambda m: not m.current)  # the current model first

    def promote(self, model_id: str) -> ModelInfo:
        return ModelInfo.from_json(self._call("promoting the model", self.client.promote_model, model_id))

    def predict(self, image: Case | sitk.Image, model: str = "current", classes: bool = False) -> PredictionResult:
        """Send the image (NRRD, exact geometry) and read back the mask on the same grid."""
        sitk_image = image.image_sitk() if isinstance(image, Case) else image
        with tempfile.TemporaryDirectory(prefix="BackSplit-predict-") as tmp:
            tmp = Path(tmp)
            image_path = write_image(sitk_image, tmp / "image.nrrd")
            (tmp / "out").mkdir()  # a folder: the answer keeps the server's file name (and so its format)
            out = self._call("prediction", self.client.predict, image_path, tmp / "out", model=model or "current",
                             classes=classes)
            if not classes:
                return PredictionResult(mask=read_image(out, "predicted mask"), model_id=model)
            return _read_prediction_zip(out, tmp / "unpacked", model)


class LocalBackend(RemoteBackend):
    """The engine on this machine: a BackSplit server in its own process, reached over loopback.

    ``start`` returns at once; ``is_ready`` says when the server answers (poll it from a timer), and raises
    with the server log's last lines if the process died (for example because PyTorch is missing).
    """

    def __init__(self, data_dir: str | Path, python: str | None = None, port: int | None = None,
                 engine_path: str | Path | None = None, extra_env: dict[str, str] | None = None,
                 token: str | None = None):
        self.data_dir = Path(data_dir).expanduser()
        self.python = python or default_python()
        self.port = port or free_port()
        self.engine_path = Path(engine_path) if engine_path else default_engine_path()
        self.extra_env = dict(extra_env or {})
        self.process: subprocess.Popen | None = None
        self.log_path = self.data_dir / "slicer-local-server.log"
        # A web page the clinician visits can POST to loopback: the local engine needs a token too.
        self.token = token or secrets.token_urlsafe(32)
        super().__init__(f"http://{DEFAULT_HOST}:{self.port}", token=self.token)
        # Readiness probes must answer at once, not retry for seconds.
        self._probe = BackSplitClient(self.url, timeout=2.0, retries=0)

    def command(self) -> list[str]:
        return [self.python, "-m", "BackSplitLib", "serve", "--data", str(self.data_dir), "--host", DEFAULT_HOST,
                "--port", str(self.port)]

    def environment(self) -> dict[str, str]:
        env = {**os.environ, **self.extra_env, "PYTHONUNBUFFERED": "1", TOKEN_ENV: self.token,
               EXIT_ON_STDIN_EOF_ENV: "1"}
        if self.engine_path is not None:
            env["PYTHONPATH"] = os.pathsep.join([str(self.engine_path), *filter(None, [env.get("PYTHONPATH")])])
        return env

    def start(self) -> None:
        """Start the server process (no wait). Starting again while it runs does nothing."""
        if self.running:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        try:
            # stdin is a pipe only we hold: when this process dies, the engine reads EOF and exits.
            self.process = popen(self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.PIPE,
                                 env=self.environment(), cwd=str(self.data_dir))
        except OSError as e:
            raise BackendError(f"cannot start the local engine with {self.python} ({e})",
                               "check Slicer's Python installation") from None
        finally:
            log.close()  # the child keeps its own handle

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def is_ready(self) -> bool:
        """True once the server answers /health; BackendError if the process has exited."""
        if self.process is None:
            return False
        if self.process.poll() is not None:
            raise BackendError(f"the local engine stopped (exit code {self.process.returncode}): "
                               f"{self.log_tail() or 'no output'}",
                               "install the missing packages (Install PyTorch and MONAI) or read " + str(self.log_path))
        try:
            return self._probe.health().get("status") == "ok"
        except (BackSplitClientError, OSError):
            return False

    def wait_ready(self, timeout_s: float = 60.0, wait: Callable[[float], None] = time.sleep) -> None:
        """Block until ready (tests and the self-test; the widget polls ``is_ready`` instead)."""
        deadline = time.monotonic() + timeout_s
        while not self.is_ready():
            if time.monotonic() > deadline:
                raise BackendError(f"the local engine did not answer within {timeout_s:.0f} s: {self.log_tail()}")
            wait(0.2)

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(line.strip() for line in text[-lines:])

    def describe(self, with_models: bool = True) -> str:
        return "Local engine: " + super().describe(with_models).removeprefix("Connected to ")

    def open_session(self, project: str) -> Session:
        """The local engine has no projects: everything goes to its default project."""
        self.project = DEFAULT_PROJECT
        return Session(self.describe(), self.me(), None, DEFAULT_PROJECT, LOCAL_PROJECTS_NOTE)

    def terminate(self) -> None:
        """Ask the server to stop and return at once (closing its stdin is the signal on every OS)."""
        if self.process is not None and self.process.poll() is None:
            if self.process.stdin is not None:
                self.process.stdin.close()  # with BACKSPLIT_EXIT_ON_STDIN_EOF the engine shuts down cleanly
            if sys.platform != "win32":  # on Windows terminate() kills at once, before the checkpoint
                self.process.terminate()

    def close(self) -> None:
        """Stop the server: SIGTERM (it finishes the current checkpoint), then kill after a grace period.

        Blocks up to 40 s: the panel calls it from a background thread.
        """
        if self.process is None:
            return
        if self.process.poll() is None:
            self.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None


# ------------------------------------------------------------------------------------------- helpers
def make_backend(kind: str, *, url: str = DEFAULT_SERVER_URL, token: str | None = None,
              ca_bundle: str | None = None, data_folder: str | None = None) -> Backend:
    """Remote: a server at ``url``. Local: a server process on loopback with a per-launch ``token``."""
    if kind == "Remote":
        return RemoteBackend(url, token or None, ca_bundle=ca_bundle or None)
    return LocalBackend(data_folder or Path.home() / "BackSplit", token=token)


class BackgroundCall:
    """Run one function in a daemon thread; the UI polls ``done`` from a timer and then reads ``result()``.

    Only network and file work belongs here: MRML (the scene) must stay on the main thread.
    """

    def __init__(self, fn: Callable, *args, **kwargs):
        self._result: Any = None
        self.error: BaseException | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(fn, args, kwargs), daemon=True)
        self._thread.start()

    def _run(self, fn, args, kwargs) -> None:
        try:
            self._result = fn(*args, **kwargs)
        except BaseException as e:  # handed to the UI thread, which shows it
            self.error = e
        finally:
            self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def result(self, timeout: float | None = None) -> Any:
        """The return value; re-raises the function's exception."""
        if not self._done.wait(timeout):
            raise TimeoutError("the background call has not finished")
        if self.error is not None:
            raise self.error
        return self._result


def free_port() -> int:
    """A TCP port that is free on the loopback interface right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((DEFAULT_HOST, 0))
        return int(s.getsockname()[1])


def default_engine_path() -> Path:
    """The folder holding the BackSplitLib this process imported: the built extension's module folder (it
    carries the whole engine), or the source checkout's root. The local engine gets it on PYTHONPATH."""
    import BackSplitLib

    return Path(BackSplitLib.__file__).resolve().parents[1]


def missing_packages(python: str | None = None, engine_path: str | Path | None = None,
                     requirements: Sequence[str] | None = None) -> list[str]:
    """What the local engine needs that ``python`` lacks: distributions of the requirements generated from
    pyproject (checked with importlib.metadata in that interpreter), and the engine's server package."""
    python = python or default_python()
    names = list(requirements) if requirements is not None else requirement_names(requirement_lines())
    script = ("import importlib.metadata, importlib.util, json, sys\n"
              "def has(name):\n"
              "    try:\n"
              "        if '.' in name:\n            return importlib.util.find_spec(name) is not None\n"
              "        importlib.metadata.distribution(name)\n        return True\n"
              "    except (ImportError, ValueError):\n        return False\n"
              "print(json.dumps([m for m in sys.argv[1:] if not has(m)]))\n")
    env = dict(os.environ)
    engine_path = Path(engine_path) if engine_path else default_engine_path()
    env["PYTHONPATH"] = os.pathsep.join([str(engine_path), *filter(None, [env.get("PYTHONPATH")])])
    try:
        out = run([python, "-c", script, *names, ENGINE_MODULE], capture_output=True, encoding="utf-8",
                  errors="replace", timeout=60, env=env, check=True, stdin=subprocess.DEVNULL).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise BackendError(f"cannot run {python} to check the local engine's packages ({e})") from None
    return json.loads(out.strip().splitlines()[-1])


def _read_prediction_zip(archive: Path, folder: Path, model: str | None) -> PredictionResult:
    bundle = read_prediction_bundle(archive, folder)
    return PredictionResult(mask=read_image(bundle.mask, "predicted mask"),
                            classes=read_image(bundle.classes, "predicted classes"),
                            schema=LabelSchema.from_dict(bundle.schema), model_id=model)


def _hint_for(error: BackSplitClientError, url: str) -> str | None:
    if error.status is None and "CERTIFICATE" in error.detail.upper():
        return "the server's certificate is not trusted here: give its CA bundle (a .pem file) in Remote mode"
    if error.status is None:
        return f"check that the server runs at {url} and that this computer can reach it"
    if error.status == 401:
        return "enter the server's API token"
    if error.status == 413:
        return "the server's upload limit is too small for this volume; ask its admin to raise --max-upload"
    return None


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"
