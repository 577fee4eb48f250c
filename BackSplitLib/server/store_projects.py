"""The project rows of the store (issue 24): the SQL that checks and locks a project, reads and sets its
current model, and turns its row into the API's dict; ``Store`` calls these inside its own transactions."""

from __future__ import annotations

import json

from sqlalchemy import Connection, select, update

from BackSplitLib.permissions import DEFAULT_PROJECT
from BackSplitLib.server.database import projects


def in_project(project: str) -> str:
    """" in project 'P'" for messages (nothing for the default project: its messages read as before projects)."""
    return "" if project == DEFAULT_PROJECT else f" in project '{project}'"


def lock_project(db: Connection, project: str, for_update: bool = False):
    """The project's row (name, current_model) locked until the transaction ends (shared; ``for_update``:
    exclusive, to change its current model), or None when there is no such project."""
    return db.execute(select(projects.c.name, projects.c.current_model).where(projects.c.name == project)
                      .with_for_update(read=not for_update)).first()


def no_such_project(project: str) -> str:
    return f"project '{project}' does not exist; list the projects with GET /projects"


def current_model(db: Connection, project: str) -> str | None:
    return db.execute(select(projects.c.current_model).where(projects.c.name == project)).scalar()


def set_current_model(db: Connection, project: str, model_id: str) -> None:
    db.execute(update(projects).where(projects.c.name == project).values(current_model=model_id))


def project_dict(row, counts: dict[str, dict[str, int]]) -> dict:
    d = dict(row)
    d["schema"] = json.loads(d["schema"]) if d["schema"] else None
    d["target"] = (d["schema"] or {}).get("target")
    for table, by_project in counts.items():
        d[table] = int(by_project.get(d["name"], 0))
    return d
