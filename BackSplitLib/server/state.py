"""What the route handlers share: the store, the limits, the loaded predictors and the worker supervisor."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from fastapi import Request

from BackSplitLib.server.decode_budget import DecodeBudget
from BackSplitLib.server.limits import Limits
from BackSplitLib.server.store import Store
from BackSplitLib.server.uploads import Form, UploadError, receive_form

PREDICTOR_CACHE = 2  # loaded models kept in memory for /predict


class AppState:
    """One per app (``app.state.backsplit``); handlers get it through the ``app_state`` dependency."""

    def __init__(self, store: Store, token: str | None, limits: Limits, workers: int | None):
        self.store = store
        self.token = token
        self.limits = limits
        self.workers = workers
        self.supervisor = None
        self.device = "unknown"
        self.ready = threading.Event()
        self.predictors: OrderedDict[str, Any] = OrderedDict()
        self.predict_lock = threading.Lock()
        self.decode = DecodeBudget(limits.decode_budget)  # voxel bytes decoded at once, all requests together

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


def app_state(request: Request) -> AppState:
    """FastAPI dependency: the app's shared state."""
    return request.app.state.backsplit


async def receive(request: Request, staged: Path, file_types: dict, text_fields: set[str]) -> Form:
    """The request's multipart form streamed into ``staged`` under the size limit; every file field present."""
    state = app_state(request)  # the front door has refused a declared Content-Length over the limit already
    form = await receive_form(request.headers.get("content-type", ""), request.stream(), staged,
                              state.limits.max_upload, file_types, text_fields)
    missing = [name for name in file_types if name not in form.files]
    if missing:
        raise UploadError(422, f"the request has no file field '{missing[0]}'")
    return form


def multipart_doc(fields: dict[str, dict], required: list[str]) -> dict:
    """OpenAPI for the bodies we parse ourselves (streamed), so /docs still shows the form."""
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "properties": fields, "required": required}}}}}


FILE_FIELD = {"type": "string", "format": "binary"}


def is_streamed_upload(route) -> bool:
    """Whether a route is a POST documented with ``multipart_doc``: its body is streamed to disk under
    --max-upload; every other body is JSON under ``MAX_JSON_BODY`` (``front_door.py``). Read from the route
    itself, so the same route under a ``/projects/{project}`` prefix is an upload too."""
    extra = getattr(route, "openapi_extra", None) or {}
    return "POST" in (getattr(route, "methods", None) or ()) and \
        "multipart/form-data" in extra.get("requestBody", {}).get("content", {})
