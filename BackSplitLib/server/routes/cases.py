"""``/cases``: upload (validated completely before anything is stored), list, get, delete; in the request's
project (``/projects/{project}/cases``, or today's ``/cases`` for the default project)."""

from __future__ import annotations

import json
import shutil

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from BackSplitLib.io import image_extension
from BackSplitLib.permissions import Action
from BackSplitLib.server.access import requires
from BackSplitLib.server.routes.projects import check_target, request_project
from BackSplitLib.server.state import FILE_FIELD, AppState, app_state, multipart_doc, receive
from BackSplitLib.server.uploads import IMAGE_TYPES, check_client_name, validate_case

router = APIRouter(tags=["cases"])


class Case(BaseModel):
    id: str
    name: str = Field(description="the uploaded image's file name without extension")
    created: float
    schema_: dict = Field(alias="schema", description="the case's label schema (engine format)")
    modality: str
    size: list[int]
    spacing: list[float]
    classes: list[str] = Field(description="class names present in the label")
    target_voxels: int
    bytes: int
    project: str
    model_config = ConfigDict(populate_by_name=True)


@router.post("/cases", dependencies=[requires(Action.upload_case)], status_code=201, response_model=Case, openapi_extra=multipart_doc({
    "image": {**FILE_FIELD, "description": "NIfTI or NRRD volume"},
    "label": {**FILE_FIELD, "description": "label map on the image's grid"},
    "schema": {"type": "string", "description": 'label schema JSON: {"labels": {...}, "target": "..."}'},
    "allow_empty_target": {"type": "boolean", "default": False},
    "modality": {"type": "string", "default": "CT", "description": "CT (HU windowing) or e.g. MR (z-score)"},
}, ["image", "label", "schema"]))
async def upload_case(request: Request, project: str = Depends(request_project),
                      state: AppState = Depends(app_state)) -> dict:
    """Upload one case. Validated completely before anything is stored; its target must be the project's."""
    store = state.store
    staged = store.staging_dir()
    try:
        form = await receive(request, staged, {"image": IMAGE_TYPES, "label": IMAGE_TYPES},
                             {"schema", "allow_empty_target", "modality"})
        image, label = form.file("image"), form.file("label")
        modality = check_client_name((form.fields.get("modality") or "CT").strip()[:32] or "CT", "'modality'")
        record = await run_in_threadpool(validate_case, image, label, form.fields.get("schema"),
                                         form.flag("allow_empty_target"), state.limits.max_image_size, state.decode)
        check_target(store, project, record["schema"], "this case")
        (staged / "schema.json").write_text(json.dumps(record["schema"], indent=2) + "\n")
        case = store.add_case(staged, {**record, "modality": modality, "image_file": image.path.name,
                                       "label_file": label.path.name}, project)
    finally:
        shutil.rmtree(staged, ignore_errors=True)  # gone already when the case was published
    return case


@router.get("/cases", dependencies=[requires(Action.read)], response_model=list[Case])
def list_cases(project: str = Depends(request_project), state: AppState = Depends(app_state)) -> list[dict]:
    return state.store.list_cases(project)


@router.get("/cases/{case_id}", dependencies=[requires(Action.read)], response_model=Case)
def get_case(case_id: str, project: str = Depends(request_project), state: AppState = Depends(app_state)) -> dict:
    return state.store.get_case(case_id, project)


@router.delete("/cases/{case_id}", dependencies=[requires(Action.delete_case)], status_code=204)
def delete_case(case_id: str, project: str = Depends(request_project), state: AppState = Depends(app_state)) -> None:
    state.store.delete_case(case_id, project)


_FILE_RESPONSE = {200: {"content": {"application/octet-stream": {}},
                        "description": "the file as stored after validation (NIfTI or NRRD)"}}


@router.get("/cases/{case_id}/image", dependencies=[requires(Action.read_case_files)], response_class=FileResponse, responses=_FILE_RESPONSE)
def case_image(case_id: str, project: str = Depends(request_project),
               state: AppState = Depends(app_state)) -> FileResponse:
    """The case's image, e.g. for the browser app to open a case that is already on the server."""
    return _case_file(state, project, case_id, "image")


@router.get("/cases/{case_id}/label", dependencies=[requires(Action.read_case_files)], response_class=FileResponse, responses=_FILE_RESPONSE)
def case_label(case_id: str, project: str = Depends(request_project),
               state: AppState = Depends(app_state)) -> FileResponse:
    """The case's label map (values as in the case's schema)."""
    return _case_file(state, project, case_id, "label")


def _case_file(state: AppState, project: str, case_id: str, which: str) -> FileResponse:
    case = state.store.get_case(case_id, project)  # NotFound -> 404
    stored = state.store.case_dir(case["id"]) / case[f"{which}_file"]
    suffix = "_0000" if which == "image" else ""
    return FileResponse(stored, media_type="application/octet-stream",
                        filename=f"{case['id']}{suffix}{image_extension(stored.name)}")
