"""``/jobs``: queue train and fine-tune jobs, list, get, cancel, and follow them as server-sent events; in the
request's project (a job trains only on its project's cases, and fine-tunes only its project's models)."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.concurrency import run_in_threadpool

from BackSplitLib.errors import BackSplitError
from BackSplitLib.permissions import DEFAULT_PROJECT, Action
from BackSplitLib.projects import project_path
from BackSplitLib.run_folder import load_run
from BackSplitLib.schema import LabelSchema
from BackSplitLib.server.access import requires
from BackSplitLib.server.database import StoreUnavailable
from BackSplitLib.server.routes.projects import request_project
from BackSplitLib.server.state import AppState, app_state
from BackSplitLib.server.store import PROGRESS_KEYS, TERMINAL_STATES, NotFound, Store
from BackSplitLib.server.uploads import UploadError, has_unsafe_characters
from BackSplitLib.vocabulary import (
    DEFAULT_ARCHITECTURE, DEFAULT_BATCH_SIZE, DEFAULT_FINETUNE_ITERATIONS, DEFAULT_ITERATIONS, DEFAULT_TRAINING_MODE,
    Architecture, JobKind, JobState, PartialLabelMode, TrainingMode, default_iterations,
)

router = APIRouter(tags=["jobs"])

EVENT_POLL_S = 0.2  # how often an event stream looks at its job row
HEARTBEAT_S = 15.0  # a comment line keeps idle event streams open through proxies


class JobRequest(BaseModel):
    """A training job. ``cases`` is a list of case ids or "all"; ``base_model`` (finetune only) is a
    model id, "current" or null for the current model."""

    model_config = ConfigDict(extra="forbid", use_enum_values=True)
    kind: JobKind
    cases: list[str] | Literal["all"] = "all"
    base_model: str | None = None
    mode: TrainingMode = DEFAULT_TRAINING_MODE
    iterations: int | None = Field(None, ge=1, le=10_000_000, description=(
        f"default: {DEFAULT_ITERATIONS} for train, the fine-tune recipe's {DEFAULT_FINETUNE_ITERATIONS} for finetune"))
    arch: Architecture = DEFAULT_ARCHITECTURE
    auto_promote: bool = True
    batch_size: int | None = Field(None, ge=1, le=1024)
    val_every: int | None = Field(None, ge=1, le=10_000_000)
    patch_size: list[Annotated[int, Field(ge=1, le=512)]] | None = Field(
        None, min_length=3, max_length=3, description="voxels (x, y, z); each side a multiple of the network's "
                                                      "divisor (checked by the engine's configuration)")
    seed: int | None = Field(None, ge=0, le=2**32 - 1)
    learning_rate: float | None = Field(None, gt=0, lt=10)
    val_fraction: float | None = Field(None, ge=0, lt=1, description="share of the cases held out for validation")
    partial: PartialLabelMode | None = None

    @field_validator("cases", "base_model")
    @classmethod
    def _plain_names(cls, value):
        names = [value] if isinstance(value, str) else value or []
        if any(has_unsafe_characters(name) for name in names):
            raise ValueError("contains control or bidirectional-override characters")
        return value


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
    project: str


def job_json(job: dict) -> dict:
    return Job.model_validate(job).model_dump()


@router.post("/jobs", dependencies=[requires(Action.start_job)], status_code=202, response_model=Job)
def create_job(body: JobRequest, project: str = Depends(request_project), state: AppState = Depends(app_state)) -> dict:
    """Queue a train or fine-tune job on the project's cases; follow it with GET /jobs/{id}/events."""
    store = state.store
    if body.iterations is None:  # the same budget a CLI train / finetune gets
        body.iterations = default_iterations(body.kind)
    if body.iterations > state.limits.max_iterations:
        raise UploadError(422, f"'iterations': at most {state.limits.max_iterations} on this server (--max-iterations)")
    config = _check_engine_config(body)
    _check_job_size(state, body, config)  # the combination alone, before any lookup (an unset patch waits)
    base = _job_base_model(store, body.kind, body.base_model, project)
    case_ids = _job_cases(store, body.cases, project)
    _check_job_compatible(store, case_ids, base, project)
    _check_job_size(state, body, config, case_ids, base, project)
    params = body.model_dump(exclude={"cases", "base_model", "kind"}, exclude_none=True)
    return job_json(store.add_job(body.kind, case_ids, base, params, project))


@router.get("/jobs", dependencies=[requires(Action.read)], response_model=list[Job])
def list_jobs(project: str = Depends(request_project), state: AppState = Depends(app_state)) -> list[dict]:
    return [job_json(j) for j in state.store.list_jobs(project)]


@router.get("/jobs/{job_id}", dependencies=[requires(Action.read)], response_model=Job)
def get_job(job_id: str, project: str = Depends(request_project), state: AppState = Depends(app_state)) -> dict:
    return job_json(state.store.get_job(job_id, project))


@router.delete("/jobs/{job_id}", dependencies=[requires(Action.cancel_job)], response_model=Job)
def cancel_job(job_id: str, project: str = Depends(request_project), state: AppState = Depends(app_state)) -> dict:
    """Cancel: a queued job ends now, a running one at its next iteration (it creates no model)."""
    return job_json(state.store.request_cancel(job_id, project))


@router.get("/jobs/{job_id}/events", dependencies=[requires(Action.read)], response_class=StreamingResponse, responses={200: {
    "content": {"text/event-stream": {}},
    "description": "`event: state` on each state change and `event: progress` on new progress, both with "
                   "the job's JSON; the stream ends when the job has ended."}})
async def job_events(job_id: str, request: Request, project: str = Depends(request_project),
                     state: AppState = Depends(app_state)) -> StreamingResponse:
    first = job_json(await run_in_threadpool(state.store.get_job, job_id, project))  # 404 before the stream starts
    return StreamingResponse(_event_stream(state.store, first, request), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _job_cases(store: Store, cases: list[str] | str, project: str) -> list[str]:
    """The job's case ids: "all" of the project's, or the listed ones, each of which must be the project's."""
    if cases == "all":
        ids = store.case_ids(project)
        if not ids:
            where = "the server holds" if project == DEFAULT_PROJECT else f"project '{project}' holds"
            raise UploadError(409, f"{where} no cases yet; upload some with POST {project_path(project, '/cases')} "
                                   "first")
        return ids
    if not cases:
        raise UploadError(422, "'cases' is empty; give case ids or \"all\"")
    if len(set(cases)) != len(cases):
        raise UploadError(422, "'cases' lists a case more than once")
    for case_id in cases:
        try:
            store.get_case(case_id, project)
        except NotFound as e:
            raise UploadError(422, f"{e}; list the stored cases with GET {project_path(project, '/cases')}") from None
    return list(cases)


def _job_base_model(store: Store, kind: str, base_model: str | None, project: str) -> str | None:
    if kind == "train":
        if base_model is not None:
            raise UploadError(422, "a 'train' job starts from scratch; use kind 'finetune' to start from a model")
        return None
    try:
        return store.get_model(base_model or "current", project)["id"]
    except NotFound as e:
        status = 409 if base_model in (None, "current") else 422
        raise UploadError(status, str(e)) from None


def _check_job_compatible(store: Store, case_ids: list[str], base: str | None, project: str) -> None:
    """Refuse now what would only fail minutes later in the worker: mixed targets or modalities."""
    cases = [store.get_case(c, project) for c in case_ids]
    targets = {LabelSchema.from_dict(c["schema"]).target for c in cases}
    if base is not None:
        targets.add(store.get_model(base, project)["schema"]["target"])
    if len(targets) > 1:
        raise UploadError(422, f"the cases{' and the base model' if base else ''} name different target classes "
                               f"({', '.join(sorted(targets))}); classes are matched by name, so rename the lesion "
                               "class to one name")
    modalities = {c["modality"] for c in cases}
    if len(modalities) > 1:
        raise UploadError(422, f"the cases mix modalities ({', '.join(sorted(modalities))}); train one modality per job")


def _check_engine_config(body: JobRequest):
    """The engine's own validation of the configuration the worker will build (patch size against the
    network, ...), now rather than minutes later in the worker: the rule lives once, in TrainConfig."""
    from BackSplitLib.server.worker import train_config

    try:
        config = train_config(body.model_dump(exclude={"cases", "base_model", "kind"}, exclude_none=True),
                              finetune=body.kind == JobKind.finetune)
    except ImportError:  # no training engine here: the job will fail in the worker with its reason
        return None
    try:
        config.validate()
    except BackSplitError as e:
        raise UploadError(422, str(e)) from None
    return config


def _check_job_size(state: AppState, body: JobRequest, config, case_ids: list[str] | None = None,
                    base: str | None = None, project: str = DEFAULT_PROJECT) -> None:
    """A job's memory (batch x patch voxels x classes, its output tensor) and time (iterations x batch x
    patch voxels) within the server's bounds; each field alone being in range is not enough (batch 1024 x
    patch 512^3 x 10^6 iterations was queued once). An unset patch is the planner's largest, or the base
    model's for a fine-tune. Without ``case_ids`` (before any lookup) the classes count as 2 and an unset
    patch is not checked yet."""
    from BackSplitLib.planning import DEFAULT_PATCH

    store, limits = state.store, state.limits
    base_model = store.get_model(base, project) if base is not None else None
    patch = (config.patch_size if config is not None else None) or body.patch_size
    if patch is None and case_ids is None:
        return
    if patch is None and base_model is not None:
        patch = load_run(store.model_dir(base)).preprocessing.get("patch_size")
    patch_voxels = math.prod(int(n) for n in (patch or (DEFAULT_PATCH,) * 3))
    batch = config.batch_size if config is not None else (body.batch_size or DEFAULT_BATCH_SIZE)
    iterations = int(body.iterations)
    names = {name for c in case_ids or [] for name in store.get_case(c, project)["schema"]["labels"]}
    if base_model is not None:
        names |= set(base_model["schema"]["labels"])
    classes = 2 if body.mode == TrainingMode.binary else max(2, len(names))
    tensor = batch * patch_voxels * classes
    if tensor > limits.max_job_tensor:
        raise UploadError(422, f"this job's batch x patch x classes is {batch} x {patch_voxels:,} voxels x {classes} "
                               f"= {tensor:,}, more than this server's bound of {limits.max_job_tensor:,} "
                               "(--max-job-tensor); use a smaller batch or patch")
    work = iterations * batch * patch_voxels
    if work > limits.max_job_work:
        raise UploadError(422, f"this job's iterations x batch x patch is {iterations} x {batch} x {patch_voxels:,} "
                               f"voxels = {work:,}, more than this server's bound of {limits.max_job_work:,} "
                               "(--max-job-work); ask for fewer iterations or a smaller batch or patch")


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
        try:
            job = job_json(await run_in_threadpool(store.get_job, job["id"], job["project"]))
        except StoreUnavailable:  # the database is away: keep the stream, the job goes on
            if time.monotonic() - beat > HEARTBEAT_S:
                beat = time.monotonic()
                yield b": keep-alive (job database unreachable)\n\n"
            continue
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
