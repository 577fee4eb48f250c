"""Who may do what on a BackSplit server: roles, actions and the one table between them (issue 24).

Standard library only (Python 3.9: the Slicer panel imports it). The server's route declarations name the
action each route needs and check it against :data:`ROLE_ACTIONS`; the role-matrix test is generated from
the same table; the panel and the browser app enable a button only when :func:`may` says the signed-in
user's role in the chosen project allows its action. Nothing else spells a role's rights.

Roles are per project and ordered (each role has every right of the roles before it); an ``admin`` is an
admin of every project. The operator's token file (``backsplit serve``'s token) and ``BACKSPLIT_TOKEN`` keep
working as an admin.
"""

from __future__ import annotations

from collections.abc import Mapping

from BackSplitLib.vocabulary import Vocabulary

#: The project today's routes (without ``/projects/{name}``) and every store from before issue 24 belong to.
DEFAULT_PROJECT = "default"
#: Environment variable naming the project of every remote CLI command (``--project`` overrides it).
PROJECT_ENV = "BACKSPLIT_PROJECT"


class Role(Vocabulary):
    """A user's role in a project, from the least to the most trusted."""

    viewer = "viewer"
    annotator = "annotator"
    trainer = "trainer"
    admin = "admin"


ROLES = Role.values()


class Action(Vocabulary):
    """What a request does; every API route declares exactly one."""

    read = "read"                      # list and read cases', jobs' and models' records, server health
    predict = "predict"                # predict with the project's model
    read_case_files = "read_case_files"  # download a case's image or label (patient data)
    upload_case = "upload_case"
    delete_case = "delete_case"
    start_job = "start_job"
    cancel_job = "cancel_job"
    promote_model = "promote_model"    # promote / roll back the project's current model
    upload_model = "upload_model"
    download_model = "download_model"
    delete_model = "delete_model"
    create_project = "create_project"
    manage_users = "manage_users"
    read_audit = "read_audit"


ACTIONS = Action.values()

#: What each role adds to the role before it (the issue's wording: viewer = list and predict; annotator = +
#: upload and delete cases; trainer = + start and cancel jobs; admin = + models, users, audit).
_ADDS: dict[Role, tuple[Action, ...]] = {
    Role.viewer: (Action.read, Action.predict),
    Role.annotator: (Action.read_case_files, Action.upload_case, Action.delete_case),
    Role.trainer: (Action.start_job, Action.cancel_job),
    Role.admin: (Action.promote_model, Action.upload_model, Action.download_model, Action.delete_model,
                 Action.create_project, Action.manage_users, Action.read_audit),
}


def _cumulative() -> dict[str, frozenset[str]]:
    table: dict[str, frozenset[str]] = {}
    so_far: set[str] = set()
    for role in Role:
        so_far |= {action.value for action in _ADDS[role]}
        table[role.value] = frozenset(so_far)
    return table


#: role -> every action it may take (the one table; see the module docstring).
ROLE_ACTIONS: Mapping[str, frozenset[str]] = _cumulative()


def role_allows(role: str | None, action: str) -> bool:
    """True when ``role`` (None: no role in the project) may take ``action``."""
    return role is not None and action in ROLE_ACTIONS.get(str(role), frozenset())


def may(me: Mapping | None, project: str, action: str) -> bool:
    """True when the user described by ``me`` (a ``GET /me`` body) may take ``action`` in ``project``.

    ``GET /me`` answers ``{"user": NAME, "admin": bool, "projects": {PROJECT: ROLE, ...}}``; an admin may
    take every action in every project. A client that has not read ``/me`` yet (``me`` is None) may nothing.
    """
    if not me:
        return False
    if me.get("admin"):
        return action in ACTIONS
    return role_allows((me.get("projects") or {}).get(project), action)


def least_role(action: str) -> str | None:
    """The least trusted role that may take ``action`` (what a refusal tells the user to ask for)."""
    return next((role.value for role in Role if action in ROLE_ACTIONS[role.value]), None)


#: Actions whose every request writes an audit row (``server/front_door.py``), allowed or refused: all but
#: plain reads of records. Predicting and downloading case files or models carry patient data or what was
#: learnt from it off the server, so a data-protection officer asks about them as about changes.
AUDITED_ACTIONS: frozenset[str] = frozenset(ACTIONS) - {Action.read.value}
