"""A raw wslink client (aiohttp + msgpack): what a script, not trame's page, can send to `backsplit web`.

wslink's wire format: binary WebSocket frames, each a 12-byte header (message id, offset, total size; three
little-endian uint32) followed by a slice of one msgpack message; a message is ``{"wslink": "1.0", "id",
"method", "args", "kwargs"}``. The first message must be ``wslink.hello`` with ``[{"secret": ...}]`` under
an id starting with ``system:``; its answer is ``{"result": {"clientID": ...}}`` or ``{"error": ...}``.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets

import aiohttp
import msgpack

HEADER = 12


def _frame(message: dict) -> bytes:
    body = msgpack.packb(message)
    ident = int.from_bytes(secrets.token_bytes(4), "little")
    return ident.to_bytes(4, "little") + (0).to_bytes(4, "little") + len(body).to_bytes(4, "little") + body


class WslinkClient:
    """One WebSocket to the app, opened with ``origin`` (the app checks it)."""

    def __init__(self, port: int, origin: str):
        self.url = f"http://127.0.0.1:{port}/ws"
        self.origin = origin
        self._ids = itertools.count(1)
        self._session: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self._pending: dict[int, bytearray] = {}

    async def __aenter__(self) -> WslinkClient:
        self._session = aiohttp.ClientSession()
        try:
            self.ws = await self._session.ws_connect(self.url, headers={"Origin": self.origin})
        except BaseException:
            await self._session.close()
            raise
        return self

    async def __aexit__(self, *exc) -> None:
        if self.ws is not None:
            await self.ws.close()
        await self._session.close()

    async def hello(self, secret: str, timeout: float = 30) -> dict:
        return await self._call("system:c0:0", "wslink.hello", [{"secret": secret}], timeout)

    async def call(self, method: str, args: list, timeout: float = 60) -> dict:
        """The answer (``result`` or ``error``) to one RPC."""
        return await self._call(f"rpc:c0:{next(self._ids)}", method, args, timeout)

    async def _call(self, rpc_id: str, method: str, args: list, timeout: float) -> dict:
        await self.ws.send_bytes(_frame({"wslink": "1.0", "id": rpc_id, "method": method, "args": args,
                                         "kwargs": {}}))
        return await asyncio.wait_for(self._answer(rpc_id), timeout)

    async def _answer(self, rpc_id: str) -> dict:
        while True:
            message = await self.receive()
            if message is None:
                raise ConnectionError("the app closed the WebSocket before answering")
            if message.get("id") == rpc_id:
                return message

    async def receive(self) -> dict | None:
        """The next whole message (publications included); None once the socket is closed."""
        while True:
            frame = await self.ws.receive()
            if frame.type != aiohttp.WSMsgType.BINARY:
                return None
            data = frame.data
            ident = int.from_bytes(data[0:4], "little")
            offset = int.from_bytes(data[4:8], "little")
            total = int.from_bytes(data[8:12], "little")
            buffer = self._pending.setdefault(ident, bytearray(total))
            buffer[offset:offset + len(data) - HEADER] = data[HEADER:]
            if offset + len(data) - HEADER >= total:
                del self._pending[ident]
                return msgpack.unpackb(bytes(buffer), strict_map_key=False)

    async def closed_within(self, seconds: float) -> bool:
        """True when the app closes this socket within ``seconds`` (messages until then are read and dropped)."""
        try:
            async with asyncio.timeout(seconds):
                while await self.receive() is not None:
                    pass
        except TimeoutError:
            return False
        return True

    async def state(self) -> dict:
        """The app's trame state as this client would read it."""
        return (await self.call("trame.state.get", []))["result"]["state"]
