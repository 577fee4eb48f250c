"""The front door: what a request's head alone decides, before any route runs or a body byte is read.

FastAPI reads and parses a JSON body before it solves a route's dependencies, so a token check written as a
dependency came after a 24 MiB body had been parsed (issue 19). This pure ASGI middleware runs first:

- **token**: every request but ``GET /health`` needs ``Authorization: Bearer <token>`` (the API description
  at ``/docs``, ``/openapi.json`` and ``/redoc`` included), compared in constant time; 401 otherwise;
- **cross-site writes**: a state-changing request (POST, PUT, PATCH, DELETE) whose ``Origin`` is not the
  server's own, or whose ``Sec-Fetch-Site`` is not ``same-origin``/``none``, is refused (403). Without a
  token (``--no-auth`` on loopback) a write must also carry the ``X-BackSplit-Client`` header: a page on
  another site can send a multipart POST with ``mode: 'no-cors'`` and no preflight, but not with a custom
  header (that needs a CORS preflight, which this server never grants);
- **body size**: a declared ``Content-Length`` above the route's limit is 413 before a byte is read, and the
  bytes that arrive (chunked bodies) are counted, so no route ever sees more than its limit. Upload routes
  (multipart, streamed to disk) get ``--max-upload``; every other body is JSON and gets ``MAX_JSON_BODY``.
"""

from __future__ import annotations

import hmac
import json
from urllib.parse import urlsplit

from starlette.exceptions import HTTPException as StarletteHTTPException

from BackSplitLib.image_files import format_bytes
from BackSplitLib.server.limits import MAX_JSON_BODY
from BackSplitLib.vocabulary import CLIENT_HEADER

PUBLIC = {("GET", "/health"), ("HEAD", "/health")}
WRITES = {"POST", "PUT", "PATCH", "DELETE"}
SAME_SITE_FETCH = {"same-origin", "none"}  # Sec-Fetch-Site values of the server's own pages and of typed URLs


class BodyTooLarge(StarletteHTTPException):
    """Raised from the counted ``receive`` when a body passes its limit; the app's handler answers 413."""

    def __init__(self, limit: int, what: str):
        super().__init__(413, f"the {what} is larger than this server's limit of {format_bytes(limit)}")


class FrontDoor:
    """ASGI middleware: token, cross-site writes and body size, decided from the request head."""

    def __init__(self, app, token: str | None, max_upload: int, upload_paths: frozenset[str]):
        self.app = app
        self.token = token
        self.max_upload = max_upload
        self.upload_paths = upload_paths  # POST routes whose multipart body is streamed to disk

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self.refusal(method, path, headers, scope.get("scheme", "http"))
        if refusal is not None:
            await _reply(send, *refusal)
            return
        upload = method == "POST" and path in self.upload_paths
        limit, what = (self.max_upload, "upload") if upload else (MAX_JSON_BODY, "request body")
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            await _reply(send, 413, f"the {what} ({format_bytes(int(length))}) is larger than this server's "
                                    f"limit of {format_bytes(limit)}" + ("" if upload else " for a JSON body"))
            return
        await self.app(scope, _counted(receive, limit, what), send)

    def refusal(self, method: str, path: str, headers: dict, scheme: str) -> tuple[int, str, dict] | None:
        """(status, detail, headers) when the head alone refuses the request, else None."""
        if (method, path) in PUBLIC:
            return None
        if method in WRITES:
            foreign = foreign_origin(headers, scheme)
            if foreign:
                return 403, f"refused a cross-site {method}: {foreign}; this API takes writes only from its own " \
                            "clients (BackSplitClient, the Slicer panel, the web app's server side)", {}
        authorization = headers.get("authorization")
        if self.token is not None:
            challenge = {"www-authenticate": "Bearer"}
            scheme_, _, given = (authorization or "").partition(" ")
            if authorization is None or scheme_.lower() != "bearer" or not given.strip():
                return 401, "this server needs a token: send 'Authorization: Bearer <token>'", challenge
            # Constant time: the comparison must not reveal how much of a guess was right.
            if not hmac.compare_digest(given.strip().encode(), self.token.encode()):
                return 401, "the token is not valid for this server", challenge
            return None
        if method in WRITES and not headers.get(CLIENT_HEADER.lower()):
            return 403, f"a {method} to this server needs the header '{CLIENT_HEADER}' (BackSplitClient sends " \
                        "it): without it a page on another site could change the server's data", {}
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


async def _reply(send, status: int, detail: str, headers: dict | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
