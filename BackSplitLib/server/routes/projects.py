"""``/projects``: list, create and read projects (one lesion task each), and the project of every request.

Every case, job, model and predict route exists twice (``create_app`` includes their routers twice): at
today's paths, which are the ``default`` project's, and under ``/projects/{project}``. A handler learns its
project from :func:`request_project`, the one place that reads the ``project`` path parameter; an unknown
project is 404 before the route does anything (an upload's body is not read). The front door has already
checked the route's declared action against the user's role in that same project (``access.project_of``).

Who may: ``GET /projects`` any signed-in user, who sees the projects they have a role in (an admin: all);
``POST /projects`` the ``create_project`` action; ``GET /projects/{project}`` ``read`` in that project.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, ConfigDict, Field

from BackSplitLib.errors import BackSplitError
from BackSplitLib.permissions import DEFAULT_PROJECT, Action
from BackSplitLib.projects import PROJECT_NAME_PATTERN, PROJECT_PARAM, project_name_problem
from BackSplitLib.schema import LabelSchema
from BackSplitLib.server.access import SIGNED_IN, Requirement, requires
from BackSplitLib.server.accounts import Principal
from BackSplitLib.server.state import AppState, app_state
from BackSplitLib.server.store import NotFound, Store
from BackSplitLib.server.uploads import UploadError

router = APIRouter(tags=["projects"])


class ProjectRequest(BaseModel):
    """A new project: its name and its label schema (the engine's JSON form: labels, target, colors)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: str = Field(description=f"lower-case letters, digits, '-' and '_' ({PROJECT_NAME_PATTERN})")
    schema_: dict = Field(alias="schema", description='{"labels": {"background": 0, ...}, "target": "...", '
                                                      '"colors": {...}}')


class Project(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    name: str
    created: float
    schema_: dict | None = Field(alias="schema", description="the project's label schema; null: any target "
                                                              "(the default project of a store from before projects)")
    target: str | None = Field(description="the target class every case and model of the project must have")
    current_model: str | None = Field(description="the model the project's predictions use")
    cases: int
    jobs: int
    models: int


def request_project(request: Request, state: AppState = Depends(app_state)) -> str:
    """The request's project: the ``project`` path parameter of the matched route, else the default project.
    404 when it does not exist (a name that breaks the naming rule cannot exist)."""
    name = request.path_params.get(PROJECT_PARAM, DEFAULT_PROJECT)
    problem = project_name_problem(name)
    if problem is not None:
        raise NotFound(f"{problem}; list the projects with GET /projects")
    state.store.get_project(name, counts=False)  # NotFound -> 404
    return name


def project_in_path(project: str = Path(description="the project's name (see GET /projects)")) -> None:
    """Declares the ``{project}`` path parameter of the project routes (for /docs); ``request_project``
    reads it."""


def check_target(store: Store, project: str, schema: dict, what: str) -> None:
    """A case or model whose target is not its project's is refused (422), saying which target it expects."""
    expected = store.get_project(project, counts=False)["target"]
    found = schema.get("target")
    if expected is not None and found != expected:
        raise UploadError(422, f"project '{project}' expects the target class '{expected}'; {what}'s target is "
                               f"'{found}': rename its lesion class to '{expected}', or send it to a project whose "
                               f"target is '{found}' (GET /projects lists them)")


@router.get("/projects", response_model=list[Project], dependencies=[SIGNED_IN])
def list_projects(principal: Principal = Depends(Requirement(None)), state: AppState = Depends(app_state)) -> list[dict]:
    """The projects the user has a role in (an admin: every project), oldest first, with their target, current
    model and how many cases, jobs and models each holds."""
    return [p for p in state.store.list_projects() if principal.admin or p["name"] in principal.projects]


@router.post("/projects", status_code=201, response_model=Project, dependencies=[requires(Action.create_project)])
def create_project(body: ProjectRequest, state: AppState = Depends(app_state)) -> dict:
    """Create a project: one lesion task with its own label schema, cases, jobs, models and current model.
    Its routes are ``/projects/{name}/cases``, ``/jobs``, ``/models`` and ``/predict``."""
    problem = project_name_problem(body.name)
    if problem is not None:
        raise UploadError(422, problem)
    try:
        schema = LabelSchema.from_dict(body.schema_, "'schema'")
    except BackSplitError as e:
        raise UploadError(422, str(e)) from None
    return state.store.add_project(body.name, schema.to_dict())


@router.get("/projects/{project}", response_model=Project, dependencies=[requires(Action.read),
                                                                         Depends(project_in_path)])
def get_project(project: str = Depends(request_project), state: AppState = Depends(app_state)) -> dict:
    return state.store.get_project(project)
