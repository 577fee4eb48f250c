"""``/models``: list, get, download as a zip, upload a run trained elsewhere, promote, delete; in the request's
project, whose current model is its own (promoting or rolling back in one project leaves the others alone)."""

from __future__ import annotations

import shutil
from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from BackSplitLib.errors import BackSplitError, RunError
from BackSplitLib.permissions import Action
from BackSplitLib.run_folder import ArchiveTooLarge, RunInfo, load_run, pack_run, run_metrics, unpack_run
from BackSplitLib.server.access import requires
from BackSplitLib.server.model_check import check_uploaded_model
from BackSplitLib.server.routes.projects import check_target, request_project
from BackSplitLib.server.state import FILE_FIELD, AppState, app_state, multipart_doc, receive
from BackSplitLib.server.store import Store
from BackSplitLib.server.uploads import FilePart, UploadError, format_bytes

router = APIRouter(tags=["models"])


class Model(BaseModel):
    id: str
    parent: str | None = Field(description="the model it was fine-tuned from")
    created: float
    schema_: dict = Field(alias="schema")
    metrics: dict
    cases: list[str]
    current: bool
    job_id: str | None
    source: str = Field(description="'train', 'finetune' or 'upload'")
    project: str
    model_config = ConfigDict(populate_by_name=True)


@router.get("/models", dependencies=[requires(Action.read)], response_model=list[Model])
def list_models(project: str = Depends(request_project), state: AppState = Depends(app_state)) -> list[dict]:
    return state.store.list_models(project)


@router.get("/models/{model_id}", dependencies=[requires(Action.read)], response_model=Model)
def get_model(model_id: str, project: str = Depends(request_project), state: AppState = Depends(app_state)) -> dict:
    """A model by id, or ``current`` (the project's current model)."""
    return state.store.get_model(model_id, project)


@router.get("/models/{model_id}/download", dependencies=[requires(Action.download_model)], response_class=FileResponse,
            responses={200: {"content": {"application/zip": {}}}})
def download_model(model_id: str, project: str = Depends(request_project),
                   state: AppState = Depends(app_state)) -> FileResponse:
    """The model's run folder as a zip (usable with `backsplit predict --model`)."""
    model = state.store.get_model(model_id, project)
    path = _export_zip(state.store, model["id"])
    return FileResponse(path, media_type="application/zip", filename=f"backsplit-model-{model['id']}.zip")


@router.post("/models", dependencies=[requires(Action.upload_model)], status_code=201, response_model=Model, openapi_extra=multipart_doc({
    "file": {**FILE_FIELD, "description": "a run folder as a zip (model.json, model.safetensors, ...)"},
    "promote": {"type": "boolean", "default": False},
}, ["file"]))
async def upload_model(request: Request, project: str = Depends(request_project),
                       state: AppState = Depends(app_state)) -> dict:
    """Register a run folder trained elsewhere (e.g. offline with `backsplit train`); its target must be the
    project's."""
    store = state.store
    staged = store.staging_dir()
    try:
        form = await receive(request, staged, {"file": (".zip",)}, {"promote"})
        info = await run_in_threadpool(_unpack_run, form.file("file"), staged / "run", state.limits.max_upload)
        check_target(store, project, info.schema.to_dict(), "this model")
        return await run_in_threadpool(
            store.register_model, info.path, schema=info.schema.to_dict(), metrics=run_metrics(info.meta),
            parent=None, case_ids=[], source="upload", promote=form.flag("promote"), project=project)
    finally:
        shutil.rmtree(staged, ignore_errors=True)


@router.post("/models/{model_id}/promote", dependencies=[requires(Action.promote_model)], response_model=Model)
def promote_model(model_id: str, project: str = Depends(request_project), state: AppState = Depends(app_state)) -> dict:
    """Make a model the project's current model (promoting an older one is the rollback)."""
    return state.store.promote_model(model_id, project)


@router.delete("/models/{model_id}", dependencies=[requires(Action.delete_model)], status_code=204)
def delete_model(model_id: str, project: str = Depends(request_project), state: AppState = Depends(app_state)) -> None:
    state.store.delete_model(model_id, project)
    state.predictors.pop(model_id, None)


def _export_zip(store: Store, model_id: str) -> Path:
    """The model folder as a zip, built once (models never change), without the server's own paths: the
    engine records where it trained (the job's dataset folder, the base run) in model.json."""
    path = store.root / "exports" / f"{model_id}.zip"
    return path if path.is_file() else pack_run(store.model_dir(model_id), path, rewrite_text=store.without_paths)


def _unpack_run(part: FilePart, dest: Path, max_upload: int) -> RunInfo:
    """The uploaded zip unpacked safely (bounded, no paths outside ``dest``), its model.json read, and its
    network proven to load and run; messages name the client's file, never the staging folder."""
    try:
        run_dir = unpack_run(part.path, dest, 4 * max_upload, archive_name=part.filename)
    except ArchiveTooLarge:
        raise UploadError(413, f"'{part.filename}' unpacks to more than {format_bytes(4 * max_upload)}") from None
    except RunError as e:
        raise UploadError(400, str(e)) from None
    try:
        info = load_run(run_dir)
        check_uploaded_model(info)
    except BackSplitError as e:
        raise UploadError(422, str(e).replace(str(dest), f"'{part.filename}'")) from None
    return info
