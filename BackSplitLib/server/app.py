"""The FastAPI app: cases, jobs (with server-sent progress events), model versions and prediction.

``create_app(data_dir, token, max_upload)`` builds the app from the route modules in ``routes/`` (one per
resource) and the error mapping in ``http_errors.py``. The case, job, model and predict routers are included
twice: at today's paths (the ``default`` project) and under ``/projects/{project}`` (one definition per
route; ``routes/projects.py`` resolves the request's project); ``backsplit serve`` runs it with uvicorn. Every
endpoint but ``GET /health`` needs ``Authorization: Bearer <token>``: the operator's token or a user's
(``accounts.py``); each route declares the action it needs (``access.py``; the declaration travels with the
route under the prefix), checked by the front door against the user's role in the request's project before
the body is read. Every error is
``{"detail": "<one sentence>"}``; a client's mistake is a 4xx, never a 500.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

from fastapi import Depends, FastAPI
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from BackSplitLib import __version__
from BackSplitLib.server.http_errors import install_error_handlers
from BackSplitLib.projects import PROJECT_PREFIX
from BackSplitLib.server.access import PUBLIC, BadTokenThrottle, check_declared
from BackSplitLib.server.accounts import Accounts
from BackSplitLib.server.audit import AuditLog
from BackSplitLib.server.connections import LoopbackHostOnly
from BackSplitLib.server.front_door import FrontDoor
from BackSplitLib.server.limits import Limits
from BackSplitLib.server.routes import cases, jobs, models, people, predict, projects
from BackSplitLib.server.state import AppState, app_state, is_streamed_upload
from BackSplitLib.server.store import Store



class Health(BaseModel):
    status: str = Field(description="'ok' when the API answers")
    version: str
    device: str = Field(description="where prediction runs: 'cpu' or 'cuda'")
    queue_length: int = Field(description="jobs queued or running")
    workers: int = Field(description="training worker processes")
    max_upload: int = Field(description="largest accepted request body, in bytes")
    max_image_size: int = Field(description="largest image an upload may declare (voxels x bytes per voxel)")
    max_iterations: int = Field(description="most iterations a job may ask for")
    auth: bool = Field(description="whether requests need a bearer token")


# The token is checked by the front door (``front_door.py``) before a route runs or a body is read; this
# dependency only declares the bearer scheme in the OpenAPI description (the Authorize button of /docs).
_bearer = HTTPBearer(auto_error=False, description="the token printed by `backsplit serve`")


def health(state: AppState = Depends(app_state)) -> dict:
    """Liveness and load; needs no token."""
    state.ready.wait(30)
    return {"status": "ok", "version": __version__, "device": state.device,
            "queue_length": state.store.queue_length(),
            "workers": len(state.supervisor.worker_pids()) if state.supervisor else 0,
            "max_upload": state.limits.max_upload, "max_image_size": state.limits.max_image_size,
            "max_iterations": state.limits.max_iterations, "auth": state.token is not None}


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    state: AppState = app.state.backsplit
    state.store.clean_staging()
    threading.Thread(target=state.start_workers, name="backsplit-start", daemon=True).start()
    yield
    await run_in_threadpool(state.ready.wait, 120)
    if state.supervisor is not None:
        await run_in_threadpool(state.supervisor.stop)


def create_app(data_dir: str | Path, token: str | None, max_upload: int = Limits.max_upload,
               workers: int | None = None, limits: Limits | None = None, loopback_only: bool = False,
               database: str | None = None) -> FastAPI:
    """The service over ``data_dir``. ``token=None`` disables auth (the CLI allows that on loopback only).

    ``workers``: training processes (default one per GPU, one without a GPU; 0 = API only, jobs wait).
    ``limits``: the operator's bounds (``max_upload`` wins over ``limits.max_upload``). ``loopback_only``:
    the server listens on loopback, so requests must be addressed to a loopback name (Host header).
    ``database``: the job database's URL (default: SQLite in ``data_dir``; PostgreSQL for several API
    processes and ``backsplit worker`` machines sharing it and the data folder).
    """
    app = FastAPI(
        title="BackSplit fine-tuning server",
        version=__version__,
        description="Upload cases, train and fine-tune BackSplit models, follow progress, predict lesions. "
                    "Every endpoint except /health (this description included) needs `Authorization: Bearer "
                    "<token>`; on a --no-auth server every write needs the header `X-BackSplit-Client`.",
        lifespan=_lifespan,
    )
    state = AppState(Store(data_dir, database), token, replace(limits or Limits(), max_upload=max_upload), workers)
    app.state.backsplit = state
    install_error_handlers(app)
    app.add_api_route("/health", health, methods=["GET"], response_model=Health, tags=["server"],
                      dependencies=[PUBLIC])
    for routes in (projects, people):
        app.include_router(routes.router, dependencies=[Depends(_bearer)])
    for routes in (cases, jobs, models, predict):  # today's paths are the default project's
        app.include_router(routes.router, dependencies=[Depends(_bearer)])
        app.include_router(routes.router, prefix=PROJECT_PREFIX, dependencies=[Depends(_bearer),
                                                                               Depends(projects.project_in_path)])
    check_declared(app)  # every route names the action it needs; an undeclared one stops the server here
    app.add_middleware(FrontDoor, token=token, max_upload=state.limits.max_upload, is_upload=is_streamed_upload,
                       accounts=Accounts(state.store), audit_log=AuditLog(state.store), throttle=BadTokenThrottle())
    if loopback_only:  # added last, so it runs first: a request to a foreign Host name is refused before all
        app.add_middleware(LoopbackHostOnly)
    return app
