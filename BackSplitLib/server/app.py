"""The FastAPI app: cases, jobs (with server-sent progress events), model versions and prediction.

``create_app(data_dir, token, max_upload)`` builds the app; ``backsplit serve`` runs it with uvicorn.
Every endpoint but ``GET /health`` needs ``Authorization: Bearer <token>``. Every error is
``{"detail": "<one sentence>"}``; a client's mistake is a 4xx, never a 500.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import shutil
import threading
import time
import zipfile
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from BackSplitLib import __version__
from BackSplitLib.errors import BackSplitError
from BackSplitLib.schema import LabelSchema
from BackSplitLib.server.store import PROGRESS_KEYS, TERMINAL_STATES, Conflict, NotFound, Store
from BackSplitLib.server.uploads import (
    IMAGE_TYPES, Form, UploadError, format_bytes, read_upload_image, receive_form, validate_case,
)
from BackSplitLib.vocabulary import (ARCHITECTURES, DEFAULT_ARCHITECTURE, DEFAULT_ITERATIONS, DEFAULT_TRAINING_MODE,
                                     JobKind, JobState, PartialLabelMode, TrainingMode)

log = logging.getLogger("backsplit.server")

DEFAULT_MAX_UPLOAD = 1 << 30
EVENT_POLL_S = 0.2  # how often an event stream looks at its job row
HEARTBEAT_S = 15.0  # a comment line keeps idle event streams open through proxies
PREDICTOR_CACHE = 2  # loaded models kept in memory for /predict


# ---------------------------------------------------------------------- bodies (shown in /docs)
class Health(BaseModel):
    status: str = Field(description="'ok' when the API answers")
    version: str
    device: str = Field(description="where prediction runs: 'cpu' or 'cuda'")
    queue_length: int = Field(description="jobs queued or running")
    workers: int = Field(description="training worker processes")
    max_upload: int = Field(description="largest accepted request body, in bytes")
    auth: bool = Field(description="whether requests need a bearer token")


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
    model_config = ConfigDict(populate_by_name=True)


class JobRequest(BaseModel):
    """A training job. ``cases`` is a list of case ids or "all"; ``base_model`` (finetune only) is a
    model id, "current" or null for the current model."""

    model_config = ConfigDict(extra="forbid", use_enum_values=True)
    kind: JobKind
    cases: list[str] | Literal["all"] = "all"
    base_model: str | None = None
    mode: TrainingMode = DEFAULT_TRAINING_MODE
    iterations: int = Field(DEFAULT_ITERATIONS, ge=1, le=10_000_000)
    arch: str = DEFAULT_ARCHITECTURE.value
    auto_promote: bool = True
    batch_size: int | None = Field(None, ge=1, le=1024)
    val_every: int | None = Field(None, ge=1)
    patch_size: list[int] | None = Field(None, min_length=3, max_length=3)
    seed: int | None = None
    learning_rate: float | None = Field(None, gt=0, lt=10)
    val_fraction: float | None = Field(None, ge=0, lt=1, description="share of the cases held out for validation")
    partial: PartialLabelMode | None = None


class Job(BaseModel):
    model_config = ConfigDict(use_enum_values=True)
    id: str
    kind: str
    state: JobState
    iteration: int
    total_iterations: int
    loss: float | None
    val_dice: float | None
    eta_s: float | None
    error: str | None
    model_id: str | None
    created: float
    started: float | None
    finished: float | None
    cases: list[str]
    base_model: str | None
    attempts: int
    cancel_requested: bool
    params: dict


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


class Created(BaseModel):
    id: str


def job_json(job: dict) -> dict:
    return Job.model_validate(job).model_dump()


def _multipart_doc(fields: dict[str, dict], required: list[str]) -> dict:
    """OpenAPI for the bodies we parse ourselves (streamed), so /docs still shows the form."""
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "properties": fields, "required": required}}}}}


_FILE = {"type": "string", "format": "binary"}


# ---------------------------------------------------------------------- the app
class _State:
    """What the handlers share: the store, limits, the loaded predictors and the worker supervisor."""

    def __init__(self, store: Store, token: str | None, max_upload: int, workers: int | None):
        self.store = store
        self.token = token
        self.max_upload = max_upload
        self.workers = workers
        self.supervisor = None
        self.device = "unknown"
        self.ready = threading.Event()
        self.predictors: OrderedDict[str, Any] = OrderedDict()
        self.predict_lock = threading.Lock()

    def start_workers(self) -> None:
        """Import torch (for the device) and start the workers off the event loop: the API answers at once."""
        from BackSplitLib.server.supervisor import Supervisor

        try:
            count = 0
            try:
                import torch

                count = torch.cuda.device_count() if torch.cuda.is_available() else 0
                self.device = "cuda" if count else "cpu"
            except ImportError:
                self.device = "cpu (torch is not installed: training and prediction are unavailable)"
            self.supervisor = Supervisor(self.store, self.workers, count)
            self.supervisor.start()  # settles jobs a previous server left running, then starts the workers
            try:  # warm up prediction's imports now rather than in the first /predict request
                import BackSplitLib.inference  # noqa: F401
            except ImportError:
                pass
        finally:
            self.ready.set()

    def predictor(self, model_id: str):
        """A loaded Predictor for a model (a small LRU: loading weights for every request is slow)."""
        from BackSplitLib.inference import Predictor

        if model_id in self.predictors:
            self.predictors.move_to_end(model_id)
            return self.predictors[model_id]
        predictor = Predictor.from_run(self.store.model_dir(model_id), device="auto")
        self.predictors[model_id] = predictor
        while len(self.predictors) > PREDICTOR_CACHE:
            self.predictors.popitem(last=False)
        return predictor


def create_app(data_dir: str | Path, token: str | None, max_upload: int = DEFAULT_MAX_UPLOAD,
               workers: int | None = None) -> FastAPI:
    """The service over ``data_dir``. ``token=None`` disables auth (the CLI allows that on loopback only).

    ``workers``: training processes (default one per GPU, one without a GPU; 0 = API only, jobs wait).
    """
    store = Store(data_dir)
    state = _State(store, token, max_upload, workers)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store.clean_staging()
        threading.Thread(target=state.start_workers, name="backsplit-start", daemon=True).start()
        yield
        await run_in_threadpool(state.ready.wait, 120)
        if state.supervisor is not None:
            await run_in_threadpool(state.supervisor.stop)

    app = FastAPI(
        title="BackSplit fine-tuning server",
        version=__version__,
        description="Upload cases, train and fine-tune BackSplit models, follow progress, predict lesions. "
                    "Every endpoint except /health needs `Authorization: Bearer <token>`.",
        lifespan=lifespan,
    )
    app.state.backsplit = state
    _install_error_handlers(app)
    bearer = HTTPBearer(auto_error=False, description="the token printed by `backsplit serve`")

    def require_token(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if state.token is None:
            return
        if credentials is None:
            raise StarletteHTTPException(401, "this server needs a token: send 'Authorization: Bearer <token>'",
                                         headers={"WWW-Authenticate": "Bearer"})
        # Constant time: the comparison must not reveal how much of a guess was right.
        if not hmac.compare_digest(credentials.credentials.encode(), state.token.encode()):
            raise StarletteHTTPException(401, "the token is not valid for this server",
                                         headers={"WWW-Authenticate": "Bearer"})

    api = APIRouter(dependencies=[Depends(require_token)])

    @app.get("/health", response_model=Health, tags=["server"])
    def health() -> dict:
        """Liveness and load; needs no token."""
        state.ready.wait(30)
        return {"status": "ok", "version": __version__, "device": state.device,
                "queue_length": store.queue_length(),
                "workers": len(state.supervisor.worker_pids()) if state.supervisor else 0,
                "max_upload": state.max_upload, "auth": state.token is not None}

    # ------------------------------------------------------------------ cases
    @api.post("/cases", status_code=201, response_model=Case, tags=["cases"], openapi_extra=_multipart_doc({
        "image": {**_FILE, "description": "NIfTI or NRRD volume"},
        "label": {**_FILE, "description": "label map on the image's grid"},
        "schema": {"type": "string", "description": 'label schema JSON: {"labels": {...}, "target": "..."}'},
        "allow_empty_target": {"type": "boolean", "default": False},
        "modality": {"type": "string", "default": "CT", "description": "CT (HU windowing) or e.g. MR (z-score)"},
    }, ["image", "label", "schema"]))
    async def upload_case(request: Request) -> dict:
        """Upload one case. Validated completely before anything is stored."""
        staged = store.staging_dir()
        try:
            form = await _receive(request, staged, {"image": IMAGE_TYPES, "label": IMAGE_TYPES},
                                  {"schema", "allow_empty_target", "modality"})
            image, label = form.file("image"), form.file("label")
            record = await run_in_threadpool(validate_case, image, label, form.fields.get("schema"),
                                             form.flag("allow_empty_target"))
            modality = (form.fields.get("modality") or "CT").strip()[:32] or "CT"
            (staged / "schema.json").write_text(json.dumps(record["schema"], indent=2) + "\n")
            case = store.add_case(staged, {**record, "modality": modality, "image_file": image.path.name,
                                           "label_file": label.path.name})
        finally:
            shutil.rmtree(staged, ignore_errors=True)  # gone already when the case was published
        return case

    @api.get("/cases", response_model=list[Case], tags=["cases"])
    def list_cases() -> list[dict]:
        return store.list_cases()

    @api.get("/cases/{case_id}", response_model=Case, tags=["cases"])
    def get_case(case_id: str) -> dict:
        return store.get_case(case_id)

    @api.delete("/cases/{case_id}", status_code=204, tags=["cases"])
    def delete_case(case_id: str) -> None:
        store.delete_case(case_id)

    # ------------------------------------------------------------------ jobs
    @api.post("/jobs", status_code=202, response_model=Job, tags=["jobs"])
    def create_job(body: JobRequest) -> dict:
        """Queue a train or fine-tune job; follow it with GET /jobs/{id}/events."""
        base = _job_base_model(store, body.kind, body.base_model)
        case_ids = _job_cases(store, body.cases)
        _check_job_compatible(store, case_ids, base, body.arch if body.kind == "train" else None)
        params = body.model_dump(exclude={"cases", "base_model", "kind"}, exclude_none=True)
        return job_json(store.add_job(body.kind, case_ids, base, params))

    @api.get("/jobs", response_model=list[Job], tags=["jobs"])
    def list_jobs() -> list[dict]:
        return [job_json(j) for j in store.list_jobs()]

    @api.get("/jobs/{job_id}", response_model=Job, tags=["jobs"])
    def get_job(job_id: str) -> dict:
        return job_json(store.get_job(job_id))

    @api.delete("/jobs/{job_id}", response_model=Job, tags=["jobs"])
    def cancel_job(job_id: str) -> dict:
        """Cancel: a queued job ends now, a running one at its next iteration (it creates no model)."""
        return job_json(store.request_cancel(job_id))

    @api.get("/jobs/{job_id}/events", tags=["jobs"], response_class=StreamingResponse, responses={200: {
        "content": {"text/event-stream": {}},
        "description": "`event: state` on each state change and `event: progress` on new progress, both with "
                       "the job's JSON; the stream ends when the job has ended."}})
    async def job_events(job_id: str, request: Request) -> StreamingResponse:
        first = job_json(await run_in_threadpool(store.get_job, job_id))  # 404 before the stream starts
        return StreamingResponse(_event_stream(store, first, request), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    # ------------------------------------------------------------------ models
    @api.get("/models", response_model=list[Model], tags=["models"])
    def list_models() -> list[dict]:
        return store.list_models()

    @api.get("/models/{model_id}", response_model=Model, tags=["models"])
    def get_model(model_id: str) -> dict:
        """A model by id, or ``current``."""
        return store.get_model(model_id)

    @api.get("/models/{model_id}/download", response_class=FileResponse, tags=["models"],
             responses={200: {"content": {"application/zip": {}}}})
    def download_model(model_id: str) -> FileResponse:
        """The model's run folder as a zip (usable with `backsplit predict --model`)."""
        model = store.get_model(model_id)
        path = _export_zip(store, model["id"])
        return FileResponse(path, media_type="application/zip", filename=f"backsplit-model-{model['id']}.zip")

    @api.post("/models", status_code=201, response_model=Model, tags=["models"], openapi_extra=_multipart_doc({
        "file": {**_FILE, "description": "a run folder as a zip (model.json, model.safetensors, ...)"},
        "promote": {"type": "boolean", "default": False},
    }, ["file"]))
    async def upload_model(request: Request) -> dict:
        """Register a run folder trained elsewhere (e.g. offline with `backsplit train`)."""
        staged = store.staging_dir()
        try:
            form = await _receive(request, staged, {"file": (".zip",)}, {"promote"})
            run_dir = await run_in_threadpool(_unpack_run, form.file("file"), staged / "run", state.max_upload)
            from BackSplitLib.server.worker import run_metrics

            info = await run_in_threadpool(_load_run_checked, run_dir)
            return await run_in_threadpool(
                store.register_model, run_dir, schema=info.schema.to_dict(), metrics=run_metrics(run_dir),
                parent=None, case_ids=[], source="upload", promote=form.flag("promote"))
        finally:
            shutil.rmtree(staged, ignore_errors=True)

    @api.post("/models/{model_id}/promote", response_model=Model, tags=["models"])
    def promote_model(model_id: str) -> dict:
        """Make a model current (promoting an older one is the rollback)."""
        return store.promote_model(model_id)

    @api.delete("/models/{model_id}", status_code=204, tags=["models"])
    def delete_model(model_id: str) -> None:
        store.delete_model(model_id)
        state.predictors.pop(model_id, None)

    # ------------------------------------------------------------------ prediction
    @api.post("/predict", tags=["predict"], response_class=FileResponse, openapi_extra=_multipart_doc({
        "image": {**_FILE, "description": "NIfTI or NRRD volume"},
        "model": {"type": "string", "default": "current", "description": "a model id or 'current'"},
    }, ["image"]), responses={200: {"content": {"application/octet-stream": {}, "application/zip": {}},
                                     "description": "the lesion mask in the input's geometry and format"}})
    async def predict(request: Request, classes: bool = Query(False, description="a zip with the mask and "
                                                                                   "the full class map")):
        staged = store.staging_dir()
        try:
            form = await _receive(request, staged, {"image": IMAGE_TYPES}, {"model"})
            model = store.get_model((form.fields.get("model") or "current").strip())
            path, media = await run_in_threadpool(_predict, state, model["id"], form.file("image"), staged, classes)
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise
        return FileResponse(path, media_type=media, filename=path.name,
                            headers={"X-BackSplit-Model": model["id"]},
                            background=BackgroundTask(shutil.rmtree, staged, True))

    app.include_router(api)
    return app


# ---------------------------------------------------------------------- helpers
async def _receive(request: Request, staged: Path, file_types: dict, text_fields: set[str]) -> Form:
    state: _State = request.app.state.backsplit
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > state.max_upload:  # refuse before reading a byte
        raise UploadError(413, f"the upload ({format_bytes(int(length))}) is larger than this server's limit "
                               f"of {format_bytes(state.max_upload)}")
    form = await receive_form(request.headers.get("content-type", ""), request.stream(), staged,
                              state.max_upload, file_types, text_fields)
    missing = [name for name in file_types if name not in form.files]
    if missing:
        raise UploadError(422, f"the request has no file field '{missing[0]}'")
    return form


def _job_cases(store: Store, cases: list[str] | str) -> list[str]:
    if cases == "all":
        ids = store.case_ids()
        if not ids:
            raise UploadError(409, "the server holds no cases yet; upload some with POST /cases first")
        return ids
    if not cases:
        raise UploadError(422, "'cases' is empty; give case ids or \"all\"")
    if len(set(cases)) != len(cases):
        raise UploadError(422, "'cases' lists a case more than once")
    for case_id in cases:
        try:
            store.get_case(case_id)
        except NotFound as e:
            raise UploadError(422, f"{e}; list the stored cases with GET /cases") from None
    return list(cases)


def _job_base_model(store: Store, kind: str, base_model: str | None) -> str | None:
    if kind == "train":
        if base_model is not None:
            raise UploadError(422, "a 'train' job starts from scratch; use kind 'finetune' to start from a model")
        return None
    try:
        return store.get_model(base_model or "current")["id"]
    except NotFound as e:
        status = 409 if base_model in (None, "current") else 422
        raise UploadError(status, str(e)) from None


def _check_job_compatible(store: Store, case_ids: list[str], base: str | None, arch: str | None) -> None:
    """Refuse now what would only fail minutes later in the worker: mixed targets or modalities, unknown arch."""
    cases = [store.get_case(c) for c in case_ids]
    targets = {LabelSchema.from_dict(c["schema"]).target for c in cases}
    if base is not None:
        targets.add(store.get_model(base)["schema"]["target"])
    if len(targets) > 1:
        raise UploadError(422, f"the cases{' and the base model' if base else ''} name different target classes "
                               f"({', '.join(sorted(targets))}); classes are matched by name, so rename the lesion "
                               "class to one name")
    modalities = {c["modality"] for c in cases}
    if len(modalities) > 1:
        raise UploadError(422, f"the cases mix modalities ({', '.join(sorted(modalities))}); train one modality per job")
    if arch is not None and arch not in ARCHITECTURES:
        raise UploadError(422, f"unknown architecture '{arch}' (known: {', '.join(ARCHITECTURES)})")


def _sse(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


async def _event_stream(store: Store, job: dict, request: Request) -> AsyncIterator[bytes]:
    """Progress and state events from the job's row until the job ends (or the client goes away)."""
    last_state, last_progress = job["state"], tuple(job[k] for k in PROGRESS_KEYS)
    yield _sse("state", job)
    if job["iteration"]:
        yield _sse("progress", job)
    beat = time.monotonic()
    while job["state"] not in TERMINAL_STATES:
        await asyncio.sleep(EVENT_POLL_S)
        if await request.is_disconnected():
            return
        job = job_json(await run_in_threadpool(store.get_job, job["id"]))
        progress = tuple(job[k] for k in PROGRESS_KEYS)
        if progress != last_progress:
            last_progress, beat = progress, time.monotonic()
            yield _sse("progress", job)
        if job["state"] != last_state:
            last_state, beat = job["state"], time.monotonic()
            yield _sse("state", job)
        elif time.monotonic() - beat > HEARTBEAT_S:
            beat = time.monotonic()
            yield b": keep-alive\n\n"


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


def _predict(state: _State, model_id: str, part, staged: Path, classes: bool) -> tuple[Path, str]:
    """Run the model on an uploaded image; the mask is written in the input's format next to it."""
    from BackSplitLib.io import output_extension, write_image

    image = read_upload_image(part)
    with state.predict_lock:  # one prediction at a time: GPU memory, and the cached model is not re-entrant
        predictor = state.predictor(model_id)
        prediction = predictor.predict(image, classes=classes)
        schema = predictor.schema
    base = _stem(part.filename)
    ext = output_extension(part.filename)
    mask_path = write_image(prediction.mask, staged / "out" / f"{base}_lesion{ext}")
    if not classes:
        return mask_path, "application/gzip" if ext.endswith(".gz") else "application/octet-stream"
    classes_path = write_image(prediction.classes, staged / "out" / f"{base}_classes{ext}")
    zip_path = staged / "out" / f"{base}_prediction.zip"
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(mask_path, mask_path.name)
        zf.write(classes_path, classes_path.name)
        zf.writestr("schema.json", json.dumps(schema.to_dict(), indent=2) + "\n")
    return zip_path, "application/zip"


def _stem(filename: str) -> str:
    from BackSplitLib.io import image_extension

    ext = image_extension(filename)
    name = filename[: -len(ext)] if ext else filename
    return name.removesuffix("_0000") or "image"


# ---------------------------------------------------------------------- errors -> {"detail": "..."}
def _one_sentence(exc: RequestValidationError) -> str:
    errors = exc.errors()
    if not errors:
        return "the request is not valid"
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
    where = f"'{'.'.join(loc)}'" if loc else "the request body"
    message = str(first.get("msg", "is not valid")).rstrip(".")
    if first.get("type") == "extra_forbidden":
        return f"unknown field {where}; check the spelling (see /docs)"
    if first.get("type") == "missing":
        return f"{where} is required"
    if first.get("type") == "json_invalid":
        return f"the request body is not valid JSON ({first.get('ctx', {}).get('error', message)})"
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return f"{where}: {message[0].lower() + message[1:]}{more}"


def _install_error_handlers(app: FastAPI) -> None:
    def reply(status: int, detail: str, headers: dict | None = None) -> JSONResponse:
        return JSONResponse({"detail": detail}, status_code=status, headers=headers)

    @app.exception_handler(UploadError)
    async def _upload(request: Request, exc: UploadError) -> JSONResponse:
        return reply(exc.status, exc.detail)

    @app.exception_handler(NotFound)
    async def _not_found(request: Request, exc: NotFound) -> JSONResponse:
        return reply(404, str(exc))

    @app.exception_handler(Conflict)
    async def _conflict(request: Request, exc: Conflict) -> JSONResponse:
        return reply(409, str(exc))

    @app.exception_handler(BackSplitError)
    async def _engine(request: Request, exc: BackSplitError) -> JSONResponse:
        return reply(400, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return reply(422, _one_sentence(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"there is no endpoint {request.method} {request.url.path} (see /docs)"
        elif exc.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path} (see /docs)"
        return reply(exc.status_code, detail, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return reply(500, f"internal server error ({type(exc).__name__}); the server log has the details")
