"""The panel controller's handlers for who is signed in and which project they work in (issue 24).

After connecting, the controller knows who the token is (``GET /me``; a server from before issue 24 has
none: its single token may do everything) and the server's projects. The project picker sends every later
case, job, model and predict call to the chosen project (the client's ``project``) and is remembered in the
settings; "new project from this segmentation's roles" creates one whose schema is the segments' roles
(Target, Auxiliary, their colours). What is enabled follows ``permissions.may`` in the chosen project
(``panel_state.enabled_actions``); a refusal (403) is said in the user's words, never as the server's body.
A mixin of :class:`~BackSplitSlicer.panel.PanelController`; no Qt here.
"""

from __future__ import annotations

import logging

from BackSplitLib.errors import BackSplitError
from BackSplitLib.permissions import Action, may
from BackSplitLib.projects import project_name_problem
from BackSplitLib.schema import LabelSchema

from BackSplitSlicer.panel_state import CHOOSE_PROJECT, SETTINGS, Work, identity_text, refusal_text
from BackSplitSlicer.backend_session import NOT_CONNECTED_PROJECTS_NOTE, Session, describe_project


class ProjectActions:
    """Identity and project handlers of the panel controller (see the module docstring)."""

    _project_rows: list  # the server's project records, as GET /projects lists them

    def _on_session(self, session: Session) -> None:
        """Connected: who we are, the projects, the project calls go to (the remembered one when it exists)."""
        self._project_rows = list(session.projects or [])
        self._set(me=session.me, identity=identity_text(session.me, session.project), project=session.project,
                  projects=self._project_choices(), projects_note=session.note)

    def _forget_session(self) -> None:
        self._project_rows = []
        self._set(me=None, identity="", projects=(), projects_note=NOT_CONNECTED_PROJECTS_NOTE)

    def _project_choices(self) -> tuple:
        return tuple((p["name"], describe_project(p)) for p in self._project_rows)

    def _project_schema(self) -> LabelSchema | None:
        """The chosen project's label schema (None: any target, as the default project of an old store)."""
        row = next((p for p in self._project_rows if p["name"] == self._state.project), None)
        return LabelSchema.from_dict(row["schema"], f"project {row['name']}") if row and row.get("schema") else None

    def refresh_projects(self) -> None:
        """List the server's projects again (their counts and current models change)."""
        if self.lifecycle.connected and self._project_rows:
            self._run(Work.list_projects, self.backend.list_projects, on_done=self._on_projects, quiet=True)

    def _on_projects(self, projects: list | None) -> None:
        self._project_rows = list(projects or [])
        self._set(projects=self._project_choices())

    def choose_project(self, name: str) -> None:
        """The picker: every later case, job, model and predict call goes to project ``name``."""
        try:
            if name == self._state.project:
                return
            if name not in [n for n, _ in self._state.projects]:
                raise BackSplitError(f"project {name!r} is not on this server",
                                     "click Refresh models to list the projects again")
            if not self.state().enabled[CHOOSE_PROJECT]:
                raise BackSplitError("the project cannot change while a job runs or a request is on its way",
                                     "wait for the job to end (or cancel it), then pick the project again")
            self.backend.project = name
            self.settings.set(SETTINGS["project"], name)
            self._forget_job()
            self._set(project=name, identity=identity_text(self._state.me, name), cases=(), case_ids=None)
            if may(self._state.me, name, Action.read):
                self._succeeded(CHOOSE_PROJECT, f"Project {name}: cases, training and predictions go there.")
                self.refresh_models()
            else:
                self._message("warning", f"Project {name}: {refusal_text(self._state.me, name, CHOOSE_PROJECT)}.",
                              action=CHOOSE_PROJECT)
                self._say(f"Project {name}: you have no role there.")
        except BackSplitError as e:
            self._error("Changing the project failed", e, action=CHOOSE_PROJECT)
        finally:
            self._publish()

    def create_project(self, name: str) -> None:
        """New project ``name`` whose schema is this segmentation's roles (Target, Auxiliary, colours); once
        created it is the chosen project."""
        from BackSplitSlicer.case import schema_from_roles

        name = (name or "").strip()
        try:
            backend = self._require_backend()
            if not may(self._state.me, self._state.project, Action.create_project):
                raise BackSplitError(refusal_text(self._state.me, self._state.project, "create_project"))
            if not self._project_rows:
                raise BackSplitError(self._state.projects_note or "this server has no projects")
            problem = project_name_problem(name)
            if problem is not None:
                raise BackSplitError(problem, "type a name like liver-mets")
            schema = schema_from_roles(self._segmentation_node)
            self._run(Work.create_project, backend.create_project, name, schema, label=f"Creating project {name}",
                      on_done=self._on_project_created)
        except Exception as e:  # noqa: BLE001 (shown to the user)
            self._error("Creating the project failed", e, action="create_project")
        self._publish()

    def _on_project_created(self, project: dict) -> None:
        self._project_rows = [*[p for p in self._project_rows if p["name"] != project["name"]], project]
        self._set(projects=self._project_choices())
        schema = project.get("schema") or {}
        auxiliary = [n for n in schema.get("labels", {}) if n not in ("background", schema.get("target"))]
        created = (f"Project {project['name']} created (target {schema.get('target')}; auxiliary "
                   f"{', '.join(auxiliary) or 'none'}).")
        if self.state().enabled[CHOOSE_PROJECT]:
            self.choose_project(project["name"])
            self._succeeded("create_project", f"{created} Cases, training and predictions now go to it.")
        else:
            self._succeeded("create_project", f"{created} Pick it in the Project list when the job has ended.")

    def _recheck_identity(self) -> None:
        """After a refusal: read ``GET /me`` again (an admin may have changed the role), quietly."""
        if self.backend is None or self._pending(Work.who_am_i):
            return

        def read(me: dict) -> None:
            self._set(me=me, identity=identity_text(me, self._state.project))

        def failed(error: BaseException) -> None:  # the refusal is already said; this was only a re-read
            logging.getLogger(__name__).warning("re-reading GET /me failed: %s", error)

        self._run(Work.who_am_i, self.backend.me, on_done=read, on_error=failed, quiet=True)
