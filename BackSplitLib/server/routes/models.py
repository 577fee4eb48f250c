"""``/models``: list, get, download as a zip, upload a run trained elsewhere, promote, delete."""

from __future__ import annotations

import shutil
import threading
import zipfile
from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from BackSplitLib.server.state import FILE_FIELD, AppState, app_state, multipart_doc, receive
from BackSplitLib.server.store import Store
from BackSplitLib.server.uploads import UploadError, format_bytes

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
    model_config = ConfigDict(populate_by_name=True)


@router.get("/models", response_model=list[Model])
def list_models(state: AppState = Depends(app_state)) -> list[dict]:
    return state.store.list_models()


@router.get("/models/{model_id}", response_model=Model)
def get_model(model_id: str, state: AppState = Depends(app_state)) -> dict:
    """A model by id, or ``current``."""
    return state.store.get_model(model_id)


@router.get("/models/{model_id}/download", response_class=FileResponse,
            responses={200: {"content": {"application/zip": {}}}})
def download_model(model_id: str, state: AppState = Depends(app_state)) -> FileResponse:
    """The model's run folder as a zip (usable with `backsplit predict --model`)."""
    model = state.store.get_model(model_id)
    path = _export_zip(state.store, model["id"])
    return FileResponse(path, media_type="application/zip", filename=f"backsplit-model-{model['id']}.zip")


@router.post("/models", status_code=201, response_model=Model, openapi_extra=multipart_doc({
    "file": {**FILE_FIELD, "description": "a run folder as a zip (model.json, model.safetensors, ...)"},
    "promote": {"type": "boolean", "default": False},
}, ["file"]))
async def upload_model(request: Request, state: AppState = Depends(app_state)) -> dict:
    """Register a run folder trained elsewhere (e.g. offline with `backsplit train`)."""
    store = state.store
    staged = store.staging_dir()
    try:
        form = await receive(request, staged, {"file": (".zip",)}, {"promote"})
        run_dir = await run_in_threadpool(_unpack_run, form.file("file"), staged / "run", state.max_upload)
        from BackSplitLib.server.worker import run_metrics

        info = await run_in_threadpool(_load_run_checked, run_dir)
        return await run_in_threadpool(
            store.register_model, run_dir, schema=info.schema.to_dict(), metrics=run_metrics(run_dir),
            parent=None, case_ids=[], source="upload", promote=form.flag("promote"))
    finally:
        shutil.rmtree(staged, ignore_errors=True)


@router.post("/models/{model_id}/promote", response_model=Model)
def promote_model(model_id: str, state: AppState = Depends(app_state)) -> dict:
    """Make a model current (promoting an older one is the rollback)."""
    return state.store.promote_model(model_id)


@router.delete("/models/{model_id}", status_code=204)
def delete_model(model_id: str, state: AppState = Depends(app_state)) -> None:
    state.store.delete_model(model_id)
    state.predictors.pop(model_id, None)


def _export_zip(store: Store, model_id: str) -> Path:
    """The model folder as a zip, built once (models never change) through a temporary name."""
    path = store.root / "exports" / f"{model_id}.zip"
    if path.is_file():
        return path
    folder = store.model_dir(model_id)
    tmp = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for file in sorted(folder.rglob("*")):
            if file.is_file() and not file.name.startswith("."):
                zf.write(file, file.relative_to(folder).as_posix())
    tmp.replace(path)
    return path


def _unpack_run(part, dest: Path, max_upload: int) -> Path:
    """Extract an uploaded run-folder zip safely (no paths outside, bounded size) and find model.json."""
    if not zipfile.is_zipfile(part.path):
        raise UploadError(400, f"'{part.filename}' is not a zip file")
    with zipfile.ZipFile(part.path) as zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        if sum(m.file_size for m in members) > 4 * max_upload:
            raise UploadError(413, f"'{part.filename}' unpacks to more than {format_bytes(4 * max_upload)}")
        for m in members:
            name = Path(m.filename.replace("\\", "/"))
            if name.is_absolute() or ".." in name.parts:
                raise UploadError(400, f"'{part.filename}' holds an unsafe path '{m.filename}'")
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(m) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
    found = sorted(dest.rglob("model.json"), key=lambda p: len(p.parts))
    if not found:
        raise UploadError(400, f"'{part.filename}' holds no model.json; zip a run folder written by backsplit train")
    return found[0].parent


def _load_run_checked(run_dir: Path):
    from BackSplitLib.runs import load_run

    info = load_run(run_dir)
    info.weights_path("best")  # RunError when there are no weights
    return info
