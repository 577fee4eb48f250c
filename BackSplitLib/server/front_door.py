"""The front door: what a request's head alone decides, before any route runs or a body byte is read.

FastAPI reads and parses a JSON body before it solves a route's dependencies, so a token check written as a
dependency came after a 24 MiB body had been parsed (issue 19). This pure ASGI middleware runs first. It
finds the route the request goes to (Starlette's own ``route.matches``) and its declaration (``access.py``),
then decides:

- **who** (issue 24): every route but the public ``GET /health`` needs ``Authorization: Bearer <token>``
  (the API description at ``/docs``, ``/openapi.json`` and ``/redoc`` included). The operator's token (token
  file or ``BACKSPLIT_TOKEN``, compared in constant time) is the admin ``operator``; any other token is looked
  up in the users table on every request (so a revoked token fails at once on every API process). 401
  otherwise; an address that sent too many wrong tokens gets 429 with ``Retry-After`` (``BadTokenThrottle``);
- **cross-site writes**: a state-changing request (POST, PUT, PATCH, DELETE) whose ``Origin`` is not the
  server's own, or whose ``Sec-Fetch-Site`` is not ``same-origin``/``none``, is refused (403). Without a
  token (``--no-auth`` on loopback) a write must also carry the ``X-BackSplit-Client`` header: a page on
  another site can send a multipart POST with ``mode: 'no-cors'`` and no preflight, but not with a custom
  header (that needs a CORS preflight, which this server never grants);
- **may they** (issue 24): the route's action against the user's role in the request's project (its
  ``{project}`` path parameter, else ``default``); 403 naming the role needed;
- **body size**: a declared ``Content-Length`` above the route's limit is 413 before a byte is read, and the
  bytes that arrive (chunked bodies) are counted, so no route ever sees more than its limit. Upload routes
  (multipart, streamed to disk) get ``--max-upload``; every other body is JSON and gets ``MAX_JSON_BODY``.

Every refusal (401, 403, 429) and every request whose action is audited writes an audit row (``audit.py``)
with the status answered, before the last byte of the answer: the created object's id is known by then, and
a client that has its whole answer finds its row.
"""

from __future__ import annotations

import hmac
import json
import logging
from dataclasses import replace
from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from BackSplitLib.image_files import format_bytes
from BackSplitLib.permissions import AUDITED_ACTIONS, least_role
from BackSplitLib.server.access import (PRINCIPAL_KEY, BadTokenThrottle, Requirement, RouteEntry, match_route,
                                        object_of, project_of, route_table)
from BackSplitLib.server.accounts import OPERATOR_PRINCIPAL, Accounts, Principal
from BackSplitLib.server.audit import UNKNOWN_USER, AuditLog, AuditRow
from BackSplitLib.server.database import StoreUnavailable
from BackSplitLib.server.limits import MAX_JSON_BODY
from BackSplitLib.vocabulary import CLIENT_HEADER

log = logging.getLogger("backsplit.server")
WRITES = {"POST", "PUT", "PATCH", "DELETE"}
SAME_SITE_FETCH = {"same-origin", "none"}  # Sec-Fetch-Site values of the server's own pages and of typed URLs
REFUSALS = {401, 403, 429}
CAPTURED_BODY = 1 << 16  # a created object's JSON record, read for its id; larger bodies are not parsed
RETRY_AFTER_UNAVAILABLE_S = 5


class BodyTooLarge(StarletteHTTPException):
    """Raised from the counted ``receive`` when a body passes its limit; the app's handler answers 413."""

    def __init__(self, limit: int, what: str):
        super().__init__(413, f"the {what} is larger than this server's limit of {format_bytes(limit)}")


class Refused(Exception):
    """What the head alone refuses: status, one-sentence detail, extra headers."""

    def __init__(self, status: int, detail: str, headers: dict | None = None):
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers or {}


class FrontDoor:
    """ASGI middleware: who, cross-site writes, may they, body size; audit rows (see the module docstring)."""

    def __init__(self, app, token: str | None, max_upload: int, is_upload, accounts: Accounts, audit_log: AuditLog,
                 throttle: BadTokenThrottle | None = None):
        self.app = app
        self.token = token
        self.max_upload = max_upload
        self.is_upload = is_upload  # route -> whether its multipart body is streamed to disk
        self.accounts = accounts
        self.audit_log = audit_log
        self.throttle = throttle or BadTokenThrottle()
        self.table: list[RouteEntry] | None = None  # the app's routes, read at the first request (all added)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.table is None:
            self.table = route_table(scope["app"], self.is_upload)
        route, params = match_route(self.table, method, scope["path"])
        need = route.requirement if route is not None else None
        if need is not None and need.public:
            await self._admit(scope, receive, send, route, headers, None)
            return
        address = (scope.get("client") or ("unknown",))[0]
        template = route.path if route is not None else scope["path"][:200]
        row = AuditRow(UNKNOWN_USER, address, need.label if need else "unknown", project_of(params),
                       object_of(params), f"{method} {template}", 0)
        try:
            principal = await self.identify(headers, address)
            row = replace(row, user=principal.name)
            self.check_site(method, headers, scope.get("scheme", "http"))
            self.check_may(principal, need, row.project)
        except Refused as refusal:
            refused = replace(row, outcome=refusal.status) if refusal.status in REFUSALS else None
            await _reply(send, refusal.status, refusal.detail, refusal.headers,
                         before_body=(lambda: self._record(refused)) if refused else None)
            return
        scope[PRINCIPAL_KEY] = principal
        audited = need is not None and need.action in AUDITED_ACTIONS
        await self._admit(scope, receive, send, route, headers, row if audited else None)

    async def identify(self, headers: dict, address: str) -> Principal:
        """The request's user, or Refused (401, 429, 503)."""
        if self.token is None:
            return OPERATOR_PRINCIPAL  # --no-auth (loopback only): whoever can connect is the operator
        wait = self.throttle.retry_after(address)
        if wait is not None:
            raise Refused(429, f"too many wrong tokens from {address}; try again in {wait} s",
                          {"retry-after": str(wait)})
        challenge = {"www-authenticate": "Bearer"}
        authorization = headers.get("authorization")
        scheme, _, given = (authorization or "").partition(" ")
        given = given.strip()
        if authorization is None or scheme.lower() != "bearer" or not given:
            raise Refused(401, "this server needs a token: send 'Authorization: Bearer <token>'", challenge)
        # Constant time: the comparison must not reveal how much of a guess was right.
        if hmac.compare_digest(given.encode(), self.token.encode()):
            return OPERATOR_PRINCIPAL
        try:
            # SQLite: one indexed read of a local file (WAL: readers never wait), done in place, so a refusal
            # still comes before the client's first body chunk; PostgreSQL: a round trip, off the event loop.
            principal = self.accounts.identify(given) if not self.accounts.store.shared else \
                await run_in_threadpool(self.accounts.identify, given)
        except StoreUnavailable:
            raise Refused(503, "the server's user database is not reachable right now; try again in a moment",
                          {"retry-after": str(RETRY_AFTER_UNAVAILABLE_S)}) from None
        if principal is None:
            self.throttle.failed(address)
            raise Refused(401, "the token is not valid for this server (unknown, or revoked)", challenge)
        return principal

    def check_site(self, method: str, headers: dict, scheme: str) -> None:
        if method not in WRITES:
            return
        foreign = foreign_origin(headers, scheme)
        if foreign:
            raise Refused(403, f"refused a cross-site {method}: {foreign}; this API takes writes only from its own "
                               "clients (BackSplitClient, the Slicer panel, the web app's server side)")
        if self.token is None and not headers.get(CLIENT_HEADER.lower()):
            raise Refused(403, f"a {method} to this server needs the header '{CLIENT_HEADER}' (BackSplitClient "
                               "sends it): without it a page on another site could change the server's data")

    @staticmethod
    def check_may(principal: Principal, need: Requirement | None, project: str) -> None:
        if need is None or need.action is None or principal.may(project, need.action):
            return  # no route (the router answers 404) or any signed-in user
        role = principal.role(project)
        article = "an" if role and role[0] in "aeiou" else "a"
        has = f"is {article} {role} in project '{project}'" if role else f"has no role in project '{project}'"
        raise Refused(403, f"user '{principal.name}' {has}; '{need.action}' needs the {least_role(need.action)} "
                           "role or higher: ask an admin of this server")

    async def _admit(self, scope, receive, send, route, headers: dict, row: AuditRow | None) -> None:
        """Past the checks: bound the body, run the route, and write the audit row when one is due."""
        upload = route is not None and scope["method"] == "POST" and route.upload
        limit, what = (self.max_upload, "upload") if upload else (MAX_JSON_BODY, "request body")
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            detail = f"the {what} ({format_bytes(int(length))}) is larger than this server's limit of " \
                     f"{format_bytes(limit)}" + ("" if upload else " for a JSON body")
            too_large = replace(row, outcome=413) if row is not None else None
            await _reply(send, 413, detail, before_body=(lambda: self._record(too_large)) if too_large else None)
            return
        if row is None:
            await self.app(scope, _counted(receive, limit, what), send)
            return
        answered = {"status": 500, "json": False, "recorded": False}
        body = bytearray()

        async def record() -> None:
            answered["recorded"] = True
            status = answered["status"]
            created = _created_id(bytes(body)) if row.object is None and 200 <= status < 300 else None
            await self._record(replace(row, outcome=status, object=row.object or created))

        async def watched_send(message) -> None:
            if message["type"] == "http.response.start":
                answered["status"] = message["status"]
                content_type = dict(message.get("headers") or []).get(b"content-type", b"")
                answered["json"] = content_type.startswith(b"application/json")
            elif message["type"] == "http.response.body":
                if answered["json"] and len(body) < CAPTURED_BODY:
                    body.extend(message.get("body", b""))
                if not message.get("more_body", False):
                    await record()  # before the last bytes: a client holding the answer finds its row
            await send(message)

        try:
            await self.app(scope, _counted(receive, limit, what), watched_send)
        finally:
            if not answered["recorded"]:  # the route raised before answering (the server's 500)
                await record()

    async def _record(self, row: AuditRow) -> None:
        # The request is being answered; the operator must hear that its row is missing.
        try:
            await run_in_threadpool(self.audit_log.record, row)
        except StoreUnavailable as e:
            log.error("audit row not written (%s): %s", e, row)
        except Exception:
            log.exception("audit row not written: %s", row)


def _created_id(body: bytes) -> str | None:
    """The id (or name) of the object a response describes, when it is a JSON record."""
    try:
        record = json.loads(body)
    except ValueError:
        return None
    if isinstance(record, dict):
        value = record.get("id", record.get("name"))
        return str(value)[:200] if isinstance(value, (str, int)) else None
    return None


def foreign_origin(headers: dict, scheme: str) -> str | None:
    """Why the request comes from a page of another origin, or None: a ``Sec-Fetch-Site`` other than
    same-origin/none, or an ``Origin`` (``null`` included) that is not this server's scheme://host:port."""
    site = headers.get("sec-fetch-site")
    if site is not None and site.strip().lower() not in SAME_SITE_FETCH:
        return f"Sec-Fetch-Site is {site.strip()[:20]!r}"
    origin = headers.get("origin")
    if origin is None:
        return None
    if _origin_key(origin) != _origin_key(f"{scheme}://{headers.get('host', '')}"):
        return f"Origin {origin.strip()[:80]!r} is not this server"
    return None


def _origin_key(origin: str) -> tuple[str, str, int | None] | None:
    """(scheme, host, port) of an origin, default ports filled in; None for 'null' and anything unreadable."""
    try:
        parts = urlsplit(origin.strip().lower())
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return parts.scheme, parts.hostname, port


def _counted(receive, limit: int, what: str):
    """``receive`` that raises BodyTooLarge as soon as the body's bytes pass ``limit`` (chunked bodies)."""
    received = 0

    async def wrapped():
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge(limit, what)
        return message

    return wrapped


async def _reply(send, status: int, detail: str, headers: dict | None = None, before_body=None) -> None:
    """Answer with ``{"detail": ...}``. ``before_body``: awaited between the head and the body (the audit row:
    the status goes out at once, and a client that has read the whole answer finds its row)."""
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    if before_body is not None:
        await before_body()
    await send({"type": "http.response.body", "body": body})
