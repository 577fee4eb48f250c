"""What connecting to a BackSplit server finds (issue 24), as plain data: who the token is and the projects.

Standard library only. ``RemoteBackend.open_session`` builds a :class:`Session`; the panel controller shows
it (``panel_projects``). A server from before issue 24 has neither ``GET /me`` nor ``GET /projects``: its
single token may do everything (:data:`SINGLE_TOKEN_ME`) in its one task.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from BackSplitLib.permissions import DEFAULT_PROJECT, Action, may

#: ``GET /me`` of a server from before issue 24 (it answers 404): today's single token, an admin.
SINGLE_TOKEN_ME = {"user": "the server's token", "admin": True, "projects": {}, "single_token": True}
NOT_CONNECTED_PROJECTS_NOTE = "Connect to see the server's projects and your role in them."
LOCAL_PROJECTS_NOTE = "The local engine keeps one project on this computer; projects live on a Remote server."
LEGACY_PROJECTS_NOTE = ("This server has no projects (it is from before projects existed): everything goes to its "
                        "one task.")


@dataclass(frozen=True)
class Session:
    """What connecting found: the server's description, who the token is (``GET /me``), the server's
    projects (None: it has none) and the project every later call goes to."""

    description: str
    me: dict
    projects: Optional[list]
    project: str
    note: str = ""  # why there are no projects, or that the remembered project was not found


def pick_project(wanted: str, projects: Optional[list], me: dict) -> tuple[str, str]:
    """The project to use and a note saying why when it is not ``wanted``: ``wanted`` when the server has it
    and ``me`` may read it, else the default project, else the first project ``me`` has a role in."""
    if projects is None:
        return DEFAULT_PROJECT, LEGACY_PROJECTS_NOTE
    names = [p["name"] for p in projects]
    readable = [name for name in names if may(me, name, Action.read)]
    if wanted in readable:
        return wanted, ""
    chosen = DEFAULT_PROJECT if DEFAULT_PROJECT in readable else (readable[0] if readable else DEFAULT_PROJECT)
    if not readable:
        return chosen, "You have no role in any project of this server; ask an admin."
    if wanted in names:
        return chosen, f"You have no role in project {wanted}: using {chosen}."
    return chosen, f"Project {wanted} is not on this server (any more): using {chosen}."


def describe_project(project: dict) -> str:
    """A server project for a picker: name, target, current model and its number of cases."""
    target = project.get("target") or "any target"
    model = f"model {project['current_model']}" if project.get("current_model") else "no model yet"
    cases = int(project.get("cases") or 0)
    return f"{project['name']} ({target}; {model}; {cases} case{'s' if cases != 1 else ''})"
