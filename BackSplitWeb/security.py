"""Who may drive the app: the per-launch secret, the Origin and Host checks, and one browser at a time.

A WebSocket is not covered by CORS, so any page the clinician visits could open one to this app. Like
Jupyter, the app prints its URL with a random secret once it is ready; trame's client sends that secret in
its first WebSocket message (wslink's ``authKey``) and removes it from the address bar. On top of that the
aiohttp middleware here refuses:

- a WebSocket or an app route whose ``Origin`` is not this app's own origin;
- on a loopback address, any request whose ``Host`` is not a loopback name (DNS rebinding);
- the page without the secret in its URL, however its path is spelled (``/index.html/``, ``//index.html``:
  whatever would serve the page's HTML);
- a second browser while one is connected (one user per process: the scene is not shared).

The secret travels in wslink's first message (``wslink.hello``), after the WebSocket is open. The gate
checks it there (:class:`SecretCheck`, wslink's ``validateToken`` hook): a connection with a wrong secret,
or none within :data:`HELLO_TIMEOUT_S`, is closed at once, and only a connection that presented the
secret occupies the app's one browser slot. What that connection may then call is
:mod:`BackSplitWeb.policy`'s decision.

The app's own HTTP routes (upload, downloads) also need the per-connection ``ticket`` that the app puts in
the page's state once the WebSocket is up, so a URL copied out of the page is useless later.
"""

from __future__ import annotations

import asyncio
import hmac
import html
import ipaddress
import logging
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import WSCloseCode, web
from aiohttp.web_urldispatcher import StaticResource
from wslink.websocket import LinkProtocol

log = logging.getLogger("backsplit.web")

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]", "::1")
APP_ROUTE_PREFIX = "/backsplit/"
WS_PATH = "/ws"
PAGE_PATHS = ("/", "/index.html")
PAGE_SUFFIXES = (".html", ".htm")
# A reloaded page's old WebSocket may close a moment after the new one opens.
RELEASE_GRACE_S = 3.0
# trame's client says hello as soon as the socket opens; a socket that does not is closed.
HELLO_TIMEOUT_S = 10.0
_SOCKET = web.RequestKey("backsplit_websocket", web.WebSocketResponse)


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
        self.holder: str | None = None  # wslink client id of the connection that presented the secret
        self._sockets: dict[str, web.WebSocketResponse | None] = {}
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
        return self.holder is not None

    @staticmethod
    def serves_page(request: web.Request) -> bool:
        """True when ``request`` would be answered with the page (any spelling of its path): the root,
        which redirects to it, or any HTML file of a static folder once the path is resolved as aiohttp's
        static handler resolves it (``/index.html/``, ``//index.html``, ``/./index.html``...)."""
        if request.path in PAGE_PATHS:
            return True
        resource = request.match_info.route.resource
        if not isinstance(resource, StaticResource):
            return False
        folder = Path(resource.get_info()["directory"])
        try:
            target = folder.joinpath(request.match_info.get("filename", "")).resolve()
        except (OSError, ValueError):
            return True  # unresolvable: treat it as the page (the secret decides)
        return target.suffix.lower() in PAGE_SUFFIXES or target == folder.resolve()

    # ---------------------------------------------------------------------------------- middleware
    @web.middleware
    async def middleware(self, request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        host = request.headers.get("Host", "")
        if not self.host_allowed(host):
            return _refusal(403, "Refused", "This app only answers requests addressed to its loopback address.")
        if request.path == WS_PATH:
            return await self._websocket(request, handler, host)
        if request.path.startswith(APP_ROUTE_PREFIX):
            if request.method != "GET" and not self.origin_allowed(request.headers.get("Origin"), host):
                return _refusal(403, "Refused", "Requests from another site are refused.")
            if not self.ticket_ok(request.headers.get("X-BackSplit-Ticket") or request.query.get("ticket")):
                return _refusal(403, "Refused", "This request does not come from the connected page.")
        elif self.serves_page(request):
            if not self.secret_ok(request.query.get("secret")):
                return _refusal(403, "BackSplit web: open the full URL",
                                "Open the URL that `backsplit web` printed when it started: it carries this "
                                "launch's secret.")
            if self.busy:
                return self._in_use()
        return await handler(request)

    async def _websocket(self, request, handler, host: str) -> web.StreamResponse:
        if not self.origin_allowed(request.headers.get("Origin"), host):
            return _refusal(403, "Refused", "WebSocket connections from another site are refused.")
        if self.busy:
            try:
                await asyncio.wait_for(self._released.wait(), RELEASE_GRACE_S)
            except asyncio.TimeoutError:
                return self._in_use()
        return await handler(request)  # the slot is taken at the secret (hello), not here

    async def remember_socket(self, request: web.Request, response: web.StreamResponse) -> None:
        """aiohttp's ``on_response_prepare`` signal: the WebSocket of a request, so the gate can close it."""
        if isinstance(response, web.WebSocketResponse):
            request[_SOCKET] = response

    # ------------------------------------------------------------- the wslink side (SecretCheck calls)
    def connected(self, request: web.Request, client_id: str) -> None:
        self._sockets[client_id] = request.get(_SOCKET)
        asyncio.get_running_loop().call_later(HELLO_TIMEOUT_S, self._close_if_anonymous, client_id)

    def hello(self, secret, client_id: str) -> bool:
        """wslink's hello: the secret, and the free slot; otherwise the connection is closed at once."""
        if not self.secret_ok(secret if isinstance(secret, str) else None):
            self._close(client_id, "wrong secret")
            return False
        if self.busy and self.holder != client_id:
            self._close(client_id, "in use")
            return False
        self.holder = client_id
        self._released.clear()
        self.ticket = secrets.token_urlsafe(24)
        if self.on_connect:
            self.on_connect()
        return True

    def closed(self, client_id: str) -> None:
        self._sockets.pop(client_id, None)
        if client_id != self.holder:
            return
        self.holder = None
        self.ticket = ""
        if self.on_disconnect:
            self.on_disconnect()
        self._released.set()

    def _close_if_anonymous(self, client_id: str) -> None:
        if client_id in self._sockets and client_id != self.holder:
            self._close(client_id, "no hello")

    def _close(self, client_id: str, why: str) -> None:
        socket = self._sockets.get(client_id)
        log.warning("closing a WebSocket: %s", why)
        if socket is None:
            log.error("no socket to close for a refused connection (%s)", why)
            return

        async def close():
            await asyncio.sleep(0)  # let wslink send its "Authentication failed" answer first
            await socket.close(code=WSCloseCode.POLICY_VIOLATION, message=why.encode())

        asyncio.get_running_loop().create_task(close())

    @staticmethod
    def _in_use() -> web.Response:
        return _refusal(409, "BackSplit web is in use",
                        "Another browser is connected to this BackSplit web app; it serves one user at a "
                        "time. Close the other tab (or start your own `backsplit web` on another port) and "
                        "reload.")


class SecretCheck(LinkProtocol):
    """wslink's hooks for the gate: ``validateToken`` is the hello's secret (when a link protocol defines
    it, wslink uses it instead of its own comparison), ``onConnect``/``onClose`` frame each connection."""

    def __init__(self, gate: Gate):
        super().__init__()
        self.gate = gate

    async def validateToken(self, token, client_id):  # noqa: N802 (wslink's name)
        return self.gate.hello(token, client_id)

    def onConnect(self, request, client_id):  # noqa: N802
        self.gate.connected(request, client_id)

    def onClose(self, client_id):  # noqa: N802
        self.gate.closed(client_id)
