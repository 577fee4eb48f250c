"""Every error as ``{"detail": "<one sentence>"}``: a client's mistake is a 4xx, never a 500."""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from BackSplitLib.errors import BackSplitError
from BackSplitLib.server.database import StoreUnavailable
from BackSplitLib.server.store import Conflict, NotFound
from BackSplitLib.server.uploads import UploadError

log = logging.getLogger("backsplit.server")
RETRY_AFTER_S = 5  # what a 503 asks clients to wait while the job database is away


def one_sentence(exc: RequestValidationError) -> str:
    """pydantic's list of validation errors as one readable sentence about the first."""
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


def reply(status: int, detail: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def without_server_paths(request: Request, text: str) -> str:
    return request.app.state.backsplit.store.without_paths(text)


def install_error_handlers(app: FastAPI) -> None:
    """Map the engine's, the store's and the upload code's exceptions to HTTP statuses."""

    @app.exception_handler(UploadError)
    async def _upload(request: Request, exc: UploadError) -> JSONResponse:
        return reply(exc.status, without_server_paths(request, exc.detail), exc.headers)

    @app.exception_handler(NotFound)
    async def _not_found(request: Request, exc: NotFound) -> JSONResponse:
        return reply(404, without_server_paths(request, str(exc)))

    @app.exception_handler(Conflict)
    async def _conflict(request: Request, exc: Conflict) -> JSONResponse:
        return reply(409, without_server_paths(request, str(exc)))

    @app.exception_handler(StoreUnavailable)
    async def _store_unavailable(request: Request, exc: StoreUnavailable) -> JSONResponse:
        log.warning("%s %s: %s", request.method, request.url.path, exc)  # the details stay in the server log
        return reply(503, "the server's job database is not reachable right now; nothing was changed, try again "
                          "in a moment", headers={"Retry-After": str(RETRY_AFTER_S)})

    @app.exception_handler(BackSplitError)
    async def _engine(request: Request, exc: BackSplitError) -> JSONResponse:
        return reply(400, without_server_paths(request, str(exc)))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return reply(422, one_sentence(exc))

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
        if isinstance(exc, RecursionError):  # JSON nested thousands deep: the parser gives up, the client erred
            return reply(400, "the request body is nested too deeply to parse; send plain JSON objects")
        log.exception("internal error on %s %s", request.method, request.url.path)
        return reply(500, f"internal server error ({type(exc).__name__}); the server log has the details")
