"""Who may drive the app: the per-launch secret, the Origin and Host checks, and one browser at a time.

A WebSocket is not covered by CORS, so any page the clinician visits could open one to this app. Like
Jupyter, the app prints its URL with a random secret once it is ready; trame's client sends that secret in
its first WebSocket message (wslink's ``authKey``) and removes it from the address bar. On top of that the
aiohttp middleware here refuses:

- a WebSocket or an app route whose ``Origin`` is not this app's own origin;
- on a loopback address, any request whose ``Host`` is not a loopback name (DNS rebinding);
- the page without the secret in its URL;
- a second browser while one is connected (one user per process: the scene is not shared).

The app's own HTTP routes (upload, downloads) also need the per-connection ``ticket`` that the app puts in
the page's state once the WebSocket is up, so a URL copied out of the page is useless later.
"""

from __future__ import annotations

import asyncio
import hmac
import html
import ipaddress
import secrets
from collections.abc import Awaitable, Callable

from aiohttp import web

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]", "::1")
APP_ROUTE_PREFIX = "/backsplit/"
WS_PATH = "/ws"
PAGE_PATHS = ("/", "/index.html")
# A reloaded page's old WebSocket may close a moment after the new one opens.
RELEASE_GRACE_S = 3.0


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and 'localhost'."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def new_secret() -> str:
    # A letter first: trame's client turns URL parameters that look like numbers into numbers.
    return "s" + secrets.token_urlsafe(24)


def _refusal(status: int, title: str, message: str) -> web.Response:
    body = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
            f"<body style='font-family:sans-serif;margin:3em'><h2>{html.escape(title)}</h2>"
            f"<p id='backsplit-refusal'>{html.escape(message)}</p></body></html>")
    return web.Response(status=status, text=body, content_type="text/html")


class Gate:
    """The checks above, as one aiohttp middleware, plus the single browser slot."""

    def __init__(self, secret: str, listen_host: str):
        self.secret = secret
        self.loopback = is_loopback(listen_host)
        self.ticket = ""  # set for the connected browser; app routes need it
        self._connected = 0
        self._released = asyncio.Event()
        self.on_connect: Callable[[], None] | None = None
        self.on_disconnect: Callable[[], None] | None = None

    # -------------------------------------------------------------------------------- single checks
    def host_allowed(self, host_header: str) -> bool:
        if not self.loopback:
            return True
        name = host_header.rsplit(":", 1)[0] if not host_header.endswith("]") else host_header
        return name.lower() in LOOPBACK_NAMES

    @staticmethod
    def origin_allowed(origin: str | None, host_header: str) -> bool:
        """Same origin only: the Origin's host:port must be the Host this request was sent to."""
        if not origin:
            return False
        for scheme in ("http://", "https://"):
            if origin.startswith(scheme):
                return origin[len(scheme):].rstrip("/").lower() == host_header.lower()
        return False

    def secret_ok(self, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(str(given), self.secret)

    def ticket_ok(self, given: str | None) -> bool:
        return bool(self.ticket) and bool(given) and hmac.compare_digest(str(given), self.ticket)

    @property
    def busy(self) -> bool:
        return self._connected > 0

    # ---------------------------------------------------------------------------------- middleware
    @web.middleware
    async def middleware(self, request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        host = request.headers.get("Host", "")
        if not self.host_allowed(host):
            return _refusal(403, "Refused", "This app only answers requests addressed to its loopback address.")
        if request.path == WS_PATH:
            return await self._websocket(request, handler, host)
        if request.path in PAGE_PATHS:
            if not self.secret_ok(request.query.get("secret")):
                return _refusal(403, "BackSplit web: open the full URL",
                                "Open the URL that `backsplit web` printed when it started: it carries this "
                                "launch's secret.")
            if self.busy:
                return self._in_use()
        elif request.path.startswith(APP_ROUTE_PREFIX):
            if request.method != "GET" and not self.origin_allowed(request.headers.get("Origin"), host):
                return _refusal(403, "Refused", "Requests from another site are refused.")
            if not self.ticket_ok(request.headers.get("X-BackSplit-Ticket") or request.query.get("ticket")):
                return _refusal(403, "Refused", "This request does not come from the connected page.")
        return await handler(request)

    async def _websocket(self, request, handler, host: str) -> web.StreamResponse:
        if not self.origin_allowed(request.headers.get("Origin"), host):
            return _refusal(403, "Refused", "WebSocket connections from another site are refused.")
        if self.busy:
            try:
                await asyncio.wait_for(self._released.wait(), RELEASE_GRACE_S)
            except asyncio.TimeoutError:
                return self._in_use()
        self._connected += 1
        self._released.clear()
        self.ticket = secrets.token_urlsafe(24)
        if self.on_connect:
            self.on_connect()
        try:
            return await handler(request)
        finally:
            self._connected -= 1
            self.ticket = ""
            if self.on_disconnect:
                self.on_disconnect()
            self._released.set()

    @staticmethod
    def _in_use() -> web.Response:
        return _refusal(409, "BackSplit web is in use",
                        "Another browser is connected to this BackSplit web app; it serves one user at a "
                        "time. Close the other tab (or start your own `backsplit web` on another port) and "
                        "reload.")
