"""What the panel shows, as plain data: the state a face draws, the actions it offers, the settings keys.

``PanelController`` (``panel.py``) produces a :class:`PanelState` after every change; the Qt widget and the
browser app read it (``as_dict()`` is JSON-ready). Standard library only.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any, Optional

from BackSplitLib.permissions import DEFAULT_PROJECT, Action, may
from BackSplitLib.vocabulary import DEFAULT_FINETUNE_ITERATIONS, DEFAULT_SERVER_URL

from BackSplitSlicer.backend_session import NOT_CONNECTED_PROJECTS_NOTE

BACKENDS = ("Local", "Remote")
LOCAL_MIN_PYTHON = (3, 10)
LOCAL_MODE_NOTE = ("Local mode needs Slicer 5.10 or later (Python 3.10+); this Slicer runs Python {version}. "
                   "Use Remote mode with a BackSplit server.")

# Connection states (plain strings: they travel to the browser as they are).
DISCONNECTED, CHECKING, INSTALLING, STARTING, CONNECTING, CONNECTED, LOST = (
    "disconnected", "checking", "installing", "starting", "connecting", "connected", "lost")

# Every action a face can offer; ``state().enabled`` says which are possible now.
ACTIONS = ("connect", "stop", "reconnect", "install", "refresh_models", "add_tissue_classes", "import_organ_map",
           "open_segment_editor", "add_case", "fine_tune", "cancel", "predict", "promote", "show_auxiliary",
           "fill_between_slices", "accept_prediction", "create_project")
# Not a button: the project picker (a list), enabled like an action.
CHOOSE_PROJECT = "choose_project"

# The server's permission (``permissions.Action``) each action needs in the chosen project, and the words a
# refusal uses for it ("your role viewer in liver cannot fine-tune; ask an admin"). Actions not listed need
# none (they work on the scene, or on the connection itself).
PERMISSION_OF = {"add_case": Action.upload_case, "fine_tune": Action.start_job, "cancel": Action.cancel_job,
                 "predict": Action.predict, "promote": Action.promote_model, "refresh_models": Action.read,
                 "create_project": Action.create_project}
ACTION_WORDS = {"add_case": "add cases", "fine_tune": "fine-tune (start training)", "cancel": "cancel training",
                "predict": "predict", "promote": "promote models", "refresh_models": "list models",
                "create_project": "create projects", CHOOSE_PROJECT: "open this project"}


# Add case's mode, as both faces offer it: (key, the controller's ``annotated_slices_only``, the words).
CASE_MODES = (("auto", None, "Annotated slices only: when the target looks sparse"),
              ("on", True, "Annotated slices only: always"),
              ("off", False, "Whole volume"))


def case_mode_index(annotated_slices_only: Optional[bool]) -> int:
    """The position in :data:`CASE_MODES` of the controller's case mode."""
    return next(i for i, (_, value, _) in enumerate(CASE_MODES) if value is annotated_slices_only)


def case_choices(state: "PanelState") -> list:
    """The case picker's rows: (case id, description, checked); every case is checked when none is chosen
    (Fine-tune then trains on all of them)."""
    chosen = state.case_ids
    return [(case_id, text, chosen is None or case_id in chosen) for case_id, text in state.cases]


def chosen_cases(all_ids, checked_ids) -> Optional[list]:
    """What the picker's ticks mean for ``select_cases``: None when every case is ticked (train on all, also
    on cases added later), else the ticked ones in the server's order."""
    checked = set(checked_ids)
    if all(case_id in checked for case_id in all_ids):
        return None
    return [case_id for case_id in all_ids if case_id in checked]


class Work(str, Enum):
    """What a background task does: its identity (the member) and the words the status line shows (the value).
    Enabled actions and pending checks compare members, never the words."""

    check_packages = "Checking the local engine's packages"
    install = "Installing the local engine's packages"
    start_engine = "Starting the local engine"
    connect = "Connecting"
    list_models = "Listing models"
    list_cases = "Listing cases"
    upload_case = "Uploading case"
    start_training = "Starting training"
    read_progress = "Reading progress"
    cancel = "Cancelling"
    predict = "Predicting"
    promote = "Promoting the model"
    list_projects = "Listing projects"
    create_project = "Creating the project"
    who_am_i = "Reading who you are"

    def __str__(self) -> str:
        return self.value

# Keys in the settings store (QSettings in Slicer). The token is never stored: not here, not in the scene.
SETTINGS = {"backend": "BackSplit/Backend", "server_url": "BackSplit/ServerUrl",
            "recent_servers": "BackSplit/RecentServers", "ca_bundle": "BackSplit/CABundle",
            "local_data_folder": "BackSplit/LocalDataFolder", "wheel_folder": "BackSplit/WheelFolder",
            "iterations": "BackSplit/Iterations", "project": "BackSplit/Project"}


class Settings:
    """The settings store interface: ``get(key, default)`` and ``set(key, value)`` of plain values."""

    def get(self, key: str, default: Any = None) -> Any:
        raise NotImplementedError

    def set(self, key: str, value: Any) -> None:
        raise NotImplementedError


class MemorySettings(Settings):
    """Settings in a dict (tests, and a browser app that keeps nothing)."""

    def __init__(self, values: dict | None = None):
        self.values = dict(values or {})

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self.values[key] = value


@dataclass(frozen=True)
class RoleRow:
    """One row of the roles table."""

    segment_id: str
    name: str
    color: tuple  # (r, g, b) in 0..255
    role: str


@dataclass(frozen=True)
class Message:
    """A message the faces show once (a dialog for errors); ``serial`` grows with every new message."""

    serial: int
    level: str  # "error", "warning" or "info"
    text: str
    hint: Optional[str] = None
    action: Optional[str] = None  # the action it is about: cleared when that action later succeeds


@dataclass(frozen=True)
class PanelState:
    """Everything a face draws, as plain data (``asdict`` gives JSON-ready values)."""

    volume_id: Optional[str] = None
    segmentation_id: Optional[str] = None
    output_id: Optional[str] = None
    organ_map_id: Optional[str] = None
    organ_structures: str = ""
    roles: tuple = ()
    backend_kind: str = "Local"
    server_url: str = DEFAULT_SERVER_URL
    recent_servers: tuple = ()
    ca_bundle: str = ""
    local_data_folder: str = ""
    wheel_folder: str = ""
    local_mode_note: str = ""
    connection: str = DISCONNECTED
    server_info: str = "Not connected."
    missing_packages: tuple = ()
    install_log: str = ""
    torch_build: str = ""  # which PyTorch the install step left (version, CUDA or CPU build), once known
    me: Optional[dict] = None  # the server's GET /me ({"user", "admin", "projects": {PROJECT: ROLE}}); None: unknown
    identity: str = ""  # "signed in as NAME (ROLE in PROJECT)"
    project: str = DEFAULT_PROJECT  # where every case, job, model and predict call goes
    projects: tuple = ()  # the server's projects: (name, description); empty: no projects (see projects_note)
    projects_note: str = NOT_CONNECTED_PROJECTS_NOTE  # why there is no project picker (the local engine, a server from before projects)
    models: tuple = ()  # (model id, description)
    model_id: Optional[str] = None
    cases: tuple = ()  # the server's cases: (case id, description)
    case_ids: Optional[tuple] = None  # the cases Fine-tune trains on; None: all of them
    train_new: bool = False
    iterations: Optional[int] = None  # set by the user; None: the recipe's default (``iterations_default``)
    iterations_default: int = DEFAULT_FINETUNE_ITERATIONS
    predict_auxiliary: bool = False
    annotated_slices_only: Optional[bool] = None  # case mode; None: decided per case from the target's paint
    unpromoted: Optional[dict] = None  # {"model_id", "reason"}: the last job's model was kept but not promoted
    prediction: Optional[dict] = None  # what the last prediction found (see ``lesion_findings``)
    auxiliary_segments: int = 0  # auxiliary segments of the last prediction
    auxiliary_shown: bool = False
    job: Optional[dict] = None  # JobStatus fields + "fraction" and "text"
    curve: tuple = ()  # the job's (iteration, loss, validation Dice) as polled: the training curve
    busy: tuple = ()  # what runs in the background now
    status: str = "Ready."
    message: Optional[Message] = None
    enabled: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def local_mode_supported(version: tuple = tuple(sys.version_info[:2])) -> bool:
    """The server needs Python 3.10+ (pydantic evaluates ``X | None``): Slicer 5.10 and later."""
    return tuple(version) >= LOCAL_MIN_PYTHON


def as_list(value: Any) -> list[str]:
    """QSettings returns a lone string for a one-item list, and None for an empty one."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def enabled_actions(s: PanelState, has_backend: bool, job_running: bool, busy: set) -> dict:
    """Which actions are possible now, from the state, whether a backend exists, whether a job runs, and
    what runs in the background (the :class:`Work` of each pending task); an action that needs a permission
    (:data:`PERMISSION_OF`) also needs ``permissions.may`` to allow it for ``s.me`` in ``s.project``."""
    connected = s.connection == CONNECTED and has_backend
    inputs = s.volume_id is not None and s.segmentation_id is not None
    connecting = s.connection in (CHECKING, STARTING, CONNECTING, INSTALLING)
    local_possible = s.backend_kind == "Local" and not s.local_mode_note
    switching = busy & {Work.upload_case, Work.start_training, Work.predict, Work.promote, Work.create_project}
    enabled = {
        "connect": not connecting and (s.backend_kind == "Remote" and bool(s.server_url) or local_possible),
        "stop": has_backend,
        "reconnect": s.connection == LOST,
        "install": local_possible and not connecting and not has_backend,
        "refresh_models": connected,
        "add_tissue_classes": inputs,
        "import_organ_map": inputs and s.organ_map_id is not None,
        "open_segment_editor": s.segmentation_id is not None,
        "add_case": connected and inputs and Work.upload_case not in busy,
        "fine_tune": connected and not job_running and Work.start_training not in busy,
        "cancel": connected and job_running,
        "predict": connected and s.volume_id is not None and Work.predict not in busy,
        "promote": connected and s.unpromoted is not None and Work.promote not in busy,
        "show_auxiliary": s.output_id is not None and s.auxiliary_segments > 0,
        "fill_between_slices": s.segmentation_id is not None,
        "accept_prediction": s.output_id is not None and bool(s.prediction) and s.prediction.get("voxels", 0) > 0
                             and s.segmentation_id is not None,
        # A job belongs to its project: switch after it ended (or cancel it); nothing else on its way either.
        CHOOSE_PROJECT: connected and bool(s.projects) and not job_running and not switching,
        "create_project": connected and bool(s.projects) and s.segmentation_id is not None
                          and Work.create_project not in busy,
    }
    for action, permission in PERMISSION_OF.items():  # the server's role table decides, in the chosen project
        enabled[action] = enabled[action] and may(s.me, s.project, permission)
    return enabled


def role_in(me: Optional[dict], project: str) -> Optional[str]:
    """The user's role in ``project`` as ``GET /me`` says it ("admin" for an admin), None without one."""
    if not me:
        return None
    return "admin" if me.get("admin") else (me.get("projects") or {}).get(project)


def identity_text(me: Optional[dict], project: str) -> str:
    """Who the panel is signed in as, and their role in the chosen project."""
    if not me:
        return ""
    if me.get("single_token"):
        return ("signed in with the server's single token (admin: a server from before users and projects, "
                "where one token may do everything)")
    role = role_in(me, project)
    where = "admin of every project" if me.get("admin") else (f"{role} in {project}" if role
                                                             else f"no role in {project}")
    return f"signed in as {me.get('user', '?')} ({where})"


def refusal_text(me: Optional[dict], project: str, action: Optional[str]) -> str:
    """What a 403 means for the user, in their words: never the server's raw body."""
    words = ACTION_WORDS.get(action or "", "do this")
    role = role_in(me, project)
    if role is None:
        return f"you have no role in project {project}, so you cannot {words} there; ask an admin"
    return f"your role {role} in {project} cannot {words}; ask an admin"
