"""``/predict``: run a model of the request's project (its current model by default) on an uploaded image;
the lesion mask (or a zip with the class map) comes back."""

from __future__ import annotations

import shutil
from pathlib import Path

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from BackSplitLib.image_files import ImageTooLarge
from BackSplitLib.io import ReceivedHeader
from BackSplitLib.permissions import Action
from BackSplitLib.run_folder import load_run, prediction_names, write_prediction_bundle
from BackSplitLib.server.access import requires
from BackSplitLib.server.model_check import check_resampled_size
from BackSplitLib.server.routes.projects import request_project
from BackSplitLib.server.state import FILE_FIELD, AppState, app_state, multipart_doc, receive
from BackSplitLib.server.uploads import IMAGE_TYPES, UploadError, check_client_name, open_part, read_opened

router = APIRouter(tags=["predict"])


@router.post("/predict", dependencies=[requires(Action.predict)], response_class=FileResponse, openapi_extra=multipart_doc({
    "image": {**FILE_FIELD, "description": "NIfTI or NRRD volume"},
    "model": {"type": "string", "default": "current", "description": "a model id of the project, or 'current' "
                                                                     "(the project's current model)"},
}, ["image"]), responses={200: {"content": {"application/octet-stream": {}, "application/zip": {}},
                                "description": "the lesion mask in the input's geometry and format"}})
async def predict(request: Request, classes: bool = Query(False, description="a zip with the mask and "
                                                                               "the full class map"),
                  project: str = Depends(request_project), state: AppState = Depends(app_state)):
    staged = state.store.staging_dir()
    try:
        form = await receive(request, staged, {"image": IMAGE_TYPES}, {"model"})
        model_name = check_client_name((form.fields.get("model") or "current").strip(), "'model'")
        part = form.file("image")
        opened = await run_in_threadpool(open_part, part, "image", state.limits.max_image_size, True)  # the gate first
        model = state.store.get_model(model_name, project)
        path, media = await run_in_threadpool(_predict, state, model["id"], opened, part.filename, staged, classes)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return FileResponse(path, media_type=media, filename=path.name,
                        headers={"X-BackSplit-Model": model["id"]},
                        background=BackgroundTask(shutil.rmtree, staged, True))


def _predict(state: AppState, model_id: str, opened: ReceivedHeader, filename: str, staged: Path,
             classes: bool) -> tuple[Path, str]:
    """Run the model on an uploaded image (its resampled size bounded before it is decoded, its bytes held
    in the decode budget until the prediction is done); the mask is written in the input's format."""
    from BackSplitLib.io import output_extension, write_image

    spacing = load_run(state.store.model_dir(model_id)).preprocessing["spacing"]
    geometry = opened.geometry
    try:
        check_resampled_size(geometry.size, geometry.spacing, spacing, state.limits.max_image_size, opened.what)
    except ImageTooLarge as e:
        raise UploadError(413, str(e)) from None
    with state.decode.hold(opened.header.data_bytes, "this image"):
        image = read_opened(opened)
        with state.predict_lock:  # one prediction at a time: GPU memory, and the cached model is not re-entrant
            predictor = state.predictor(model_id)
            prediction = predictor.predict(image, classes=classes)
            schema = predictor.schema
    base = _stem(filename)
    ext = output_extension(filename)
    mask_name, classes_name = prediction_names(base, ext)
    mask_path = write_image(prediction.mask, staged / "out" / mask_name)
    if not classes:
        return mask_path, "application/gzip" if ext.endswith(".gz") else "application/octet-stream"
    classes_path = write_image(prediction.classes, staged / "out" / classes_name)
    bundle = write_prediction_bundle(staged / "out" / f"{base}_prediction.zip", mask_path, classes_path,
                                     schema.to_dict())
    return bundle, "application/zip"


def _stem(filename: str) -> str:
    from BackSplitLib.io import image_extension

    ext = image_extension(filename)
    name = filename[: -len(ext)] if ext else filename
    return name.removesuffix("_0000") or "image"
