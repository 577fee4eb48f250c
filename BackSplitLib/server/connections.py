"""Who may hold a connection: idle half-sent connections are closed, the open-file limit is raised, and a
loopback server answers only requests addressed to a loopback name (DNS rebinding).

uvicorn has no read timeout for a request head or body: 1,100 half-sent connections exhausted the
process's file descriptors and stopped the service. ``limit_concurrency`` is no fix (it answers 503 to
everyone once idle sockets fill it). So the h11 protocol is subclassed:

- a connection whose request head is not complete ``header_timeout`` seconds after it opened (or after
  its previous response) is closed, however slowly it trickles bytes;
- a request body that sends nothing for ``body_timeout`` seconds (while the app is reading) is dropped.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from BackSplitLib.server.limits import Limits



class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for the request head and a stall timeout for the body."""

    header_timeout = Limits.header_timeout
    body_timeout = Limits.body_timeout

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._watch()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch(body_data=True)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel("_head_timer")
        self._cancel("_body_timer")
        super().connection_lost(exc)

    # ------------------------------------------------------------------ timers
    def _watch(self, body_data: bool = False) -> None:
        """Arm or cancel the timers for the state the peer is in now."""
        state = self.conn.their_state
        if state is h11.IDLE:  # waiting for a request head: the deadline runs from the first wait
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(self.header_timeout, self._head_expired)
        else:
            self._cancel("_head_timer")
        if state is h11.SEND_BODY:
            if body_data or self._body_timer is None:  # the stall clock restarts with every chunk
                self._cancel("_body_timer")
                self._body_timer = self.loop.call_later(self.body_timeout, self._body_stalled)
        else:
            self._cancel("_body_timer")

    def _cancel(self, name: str) -> None:
        timer = getattr(self, name, None)
        if timer is not None:
            timer.cancel()
            setattr(self, name, None)

    def _head_expired(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.logger.info("closing a connection that sent no complete request head in %.0f s", self.header_timeout)
            self.transport.close()

    def _body_stalled(self) -> None:
        self._body_timer = None
        if self.conn.their_state is not h11.SEND_BODY or self.transport.is_closing():
            return
        if self.flow.read_paused:  # the app is not reading: not the client's stall
            self._body_timer = self.loop.call_later(self.body_timeout, self._body_stalled)
            return
        self.logger.info("dropping a request whose body stalled for %.0f s", self.body_timeout)
        self.transport.close()


def guarded_protocol(header_timeout: float, body_timeout: float) -> type[GuardedH11Protocol]:
    """A GuardedH11Protocol class with these timeouts, for ``uvicorn.Config(http=...)``."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,),
                {"header_timeout": float(header_timeout), "body_timeout": float(body_timeout)})


def raise_open_file_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit (many clients, each a socket); returns (soft, hard),
    or (-1, -1) where there are no such limits (Windows: Slicer's Local mode)."""
    try:
        import resource
    except ImportError:
        return -1, -1

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft, hard


# ---------------------------------------------------------------------- the Host header on loopback
def is_loopback(host: str) -> bool:
    """True for localhost / 127.x / ::1: the only hosts on which --no-auth is allowed."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str:
    """The name in a Host header, without its port ('[::1]:8765' -> '::1', 'localhost:80' -> 'localhost')."""
    header = header.strip()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class LoopbackHostOnly:
    """ASGI middleware for a server bound to loopback: a request whose Host header is not a loopback name
    or address is refused (403). A web page the user visits could otherwise reach the server through DNS
    rebinding (its own name resolving to 127.0.0.1) and read the answers."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "")
            if not is_loopback(host_name(host)):
                body = json.dumps({"detail": f"this server listens on loopback and answers only requests addressed to "
                                             f"localhost, 127.0.0.1 or [::1], not to {host[:60]!r}"}).encode()
                await send({"type": "http.response.start", "status": 403,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
