"""What each route needs (issue 24): one declaration per route, read by the front door's check, by the
OpenAPI description (``x-backsplit-action``) and by the role-matrix test, all through :func:`route_table`.

A route declares its need in its decorator, ``dependencies=[requires(Action.upload_case)]`` (or
``SIGNED_IN``: any known user; ``PUBLIC``: no token). The declaration is a FastAPI dependency object, so it
travels with the route when a router is included again under a prefix (``/projects/{project}/...``); it
does no work when the route runs (the front door decided before the body was read), it only hands the
route the request's :class:`~BackSplitLib.server.accounts.Principal`. The framework's own pages
(``/docs``, ``/openapi.json``, ...) are declared in :data:`FRAMEWORK_ROUTES`. ``check_declared`` refuses to
build an app with a route that declares nothing, so a new route without a rule fails every test.

The project of a request is its route's ``{project}`` path parameter, else ``permissions.DEFAULT_PROJECT``.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from functools import lru_cache

from fastapi import Depends, Request
from fastapi.params import Depends as DependsParam
from starlette.routing import compile_path

from BackSplitLib.permissions import ACTIONS, DEFAULT_PROJECT, Action
from BackSplitLib.projects import PROJECT_PARAM

PRINCIPAL_KEY = "backsplit.principal"  # the ASGI scope key under which the front door leaves the Principal


@dataclass(frozen=True, eq=False)
class Requirement:
    """A route's need: an action (checked against the user's role in the request's project), any known user
    (``action=None``), or nothing at all (``public``)."""

    action: str | None
    public: bool = False

    @property
    def label(self) -> str:
        return "public" if self.public else self.action or "signed_in"

    def __call__(self, request: Request):
        """As a dependency: the request's Principal (None on a public route)."""
        return request.scope.get(PRINCIPAL_KEY)


def requires(action: Action | str) -> DependsParam:
    """The declaration of a route that needs ``action`` (one of ``permissions.ACTIONS``)."""
    if str(action) not in ACTIONS:
        raise ValueError(f"{action!r} is not an action of permissions.Action")
    return Depends(Requirement(str(action)))


SIGNED_IN = Depends(Requirement(None))
PUBLIC = Depends(Requirement(None, public=True))

#: The pages FastAPI adds itself (no decorator of ours): the API description needs a known user.
FRAMEWORK_ROUTES = {"/openapi.json": Requirement(None), "/docs": Requirement(None),
                    "/docs/oauth2-redirect": Requirement(None), "/redoc": Requirement(None)}


def requirement_of(route) -> Requirement | None:
    """The route's declaration, or None when it has none."""
    for dependency in getattr(route, "dependencies", None) or ():
        if isinstance(getattr(dependency, "dependency", None), Requirement):
            return dependency.dependency
    return FRAMEWORK_ROUTES.get(getattr(route, "path", None))


@dataclass(frozen=True)
class RouteEntry:
    """One route as the front door sees it: its methods, path template, declaration, and whether its body is
    a streamed upload."""

    methods: frozenset[str]
    path: str
    requirement: Requirement | None
    upload: bool

    def path_params(self, path: str) -> dict | None:
        """The path parameters when ``path`` is this route's, else None."""
        regex, _, convertors = _compiled(self.path)
        found = regex.match(path)
        if found is None:
            return None
        return {k: convertors[k].convert(v) for k, v in found.groupdict().items()}


@lru_cache(maxsize=None)
def _compiled(path: str):
    return compile_path(path)


def _flat_routes(routes):
    """Every route of an app, routers included under their prefixes (FastAPI 0.16x includes routers lazily:
    ``app.routes`` then holds the routers, and ``iter_route_contexts`` their routes as served)."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # an older FastAPI copies included routes into app.routes
        return list(routes)
    return list(iter_route_contexts(routes))


def route_table(app, is_upload=lambda route: False) -> list[RouteEntry]:
    """The app's routes in the router's order: what the front door matches and the role-matrix test walks."""
    return [RouteEntry(frozenset(m for m in getattr(route, "methods", None) or () if m != "HEAD"), route.path,
                          requirement_of(route), bool(is_upload(route)))
            for route in _flat_routes(app.routes) if getattr(route, "path", None)]


def check_declared(app) -> None:
    """Refuse an app with a route that declares no need; show each route's action in the API description
    (``x-backsplit-action`` on every operation of ``/openapi.json``)."""
    table = route_table(app)
    missing = [f"{'/'.join(sorted(e.methods))} {e.path}" for e in table if e.requirement is None]
    if missing:
        raise RuntimeError(f"routes without a permission declaration (add dependencies=[requires(Action.X)]): "
                           f"{', '.join(missing)}")
    describe = app.openapi

    def openapi() -> dict:
        schema = describe()
        for entry in table:
            for method in entry.methods:
                operation = schema.get("paths", {}).get(entry.path, {}).get(method.lower())
                if operation is not None:
                    operation["x-backsplit-action"] = entry.requirement.label
        return schema

    app.openapi = openapi


def match_route(table: list[RouteEntry], method: str, path: str) -> tuple[RouteEntry | None, dict]:
    """The route a request goes to and its path parameters: the one with its path and method, else one with
    its path (the router answers 405 there; it is guarded like the route)."""
    partial = None
    for entry in table:
        params = entry.path_params(path)
        if params is None:
            continue
        if method in entry.methods or (method == "HEAD" and "GET" in entry.methods):
            return entry, params
        partial = partial or (entry, params)
    return partial or (None, {})


MAX_RECORDED = 200  # characters of a path parameter kept in an audit row (the client chose them)


def project_of(path_params: dict) -> str:
    return str(path_params.get(PROJECT_PARAM) or DEFAULT_PROJECT)[:MAX_RECORDED]


def object_of(path_params: dict) -> str | None:
    """The id a request acts on, from its path (``case_id``, ``job_id``, ``model_id``, ...)."""
    return next((str(v)[:MAX_RECORDED] for k, v in path_params.items() if k.endswith("_id")), None)


class BadTokenThrottle:
    """Wrong tokens per client address: after ``limit`` in ``window_s`` seconds, the address gets 429 until
    the oldest of them is ``window_s`` old. In-process: each API process counts its own (behind a load
    balancer an address gets ``limit`` tries per process). Other addresses are untouched."""

    def __init__(self, limit: int = 10, window_s: float = 60.0, max_addresses: int = 100_000):
        self.limit, self.window_s, self.max_addresses = limit, window_s, max_addresses
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, address: str) -> int | None:
        """Seconds the address must wait, or None when it may try."""
        failures = self._failures.get(address)
        if failures is None:
            return None
        now = time.monotonic()
        while failures and now - failures[0] >= self.window_s:
            failures.popleft()
        if not failures:
            del self._failures[address]
            return None
        return max(1, int(failures[0] + self.window_s - now + 0.999)) if len(failures) >= self.limit else None

    def failed(self, address: str) -> None:
        failures = self._failures.setdefault(address, deque(maxlen=self.limit))
        failures.append(time.monotonic())
        self._failures.move_to_end(address)
        while len(self._failures) > self.max_addresses:  # bounded memory under a spray of addresses
            self._failures.popitem(last=False)
