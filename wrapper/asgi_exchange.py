"""One request under any ASGI server (Modal's, ``uvicorn wrapper.asgi:app``, every route but the
fast lane's under the wrapper's own): the gateway's view of it, in ASGI messages.

It offers what :class:`wrapper.fast_lane.FastExchange` offers, by the same names, so the gateway
(``wrapper.middleware``) serves both through one path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from .errors import ClientGone, body_too_large, body_too_slow


class AsgiExchange:
    __slots__ = ("_send", "_watcher", "limit", "receive", "response_started", "rid", "scope", "status")

    def __init__(self, scope: dict[str, Any], receive: Any, send: Any, max_body: int) -> None:
        self.scope = scope
        self.limit = max_body
        self.receive = receive
        self._send = send
        self.rid = b""
        self.status = 500
        self.response_started = False
        self._watcher: asyncio.Task[None] | None = None

    async def send(self, message: dict[str, Any]) -> None:
        """The app's ``send``: notes the status and adds ``x-request-id``."""
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.response_started = True
            message["headers"] = [*message.get("headers", ()), (b"x-request-id", self.rid)]
        await self._send(message)

    async def answer(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes | memoryview) -> None:
        """A whole fixed-length answer (``headers`` without content-length)."""
        headers.append((b"content-length", b"%d" % len(body)))
        await self.send({"type": "http.response.start", "status": status, "headers": headers})
        await self.send({"type": "http.response.body", "body": body})

    async def stream(self, response: Any) -> None:
        await response(self.scope, self.receive, self.send)

    async def call_app(self, app: Any, receive: Any = None) -> None:
        await app(self.scope, receive or self.receive, self.send)

    async def body(self, timeout: float) -> bytes:
        """The whole body, within the gateway's size limit (413) and ``timeout`` (408)."""
        try:
            async with asyncio.timeout(timeout):
                return await read_body(self.receive, self.limit)
        except TimeoutError:
            raise body_too_slow(timeout) from None

    def when_gone(self, callback: Callable[[], None] | None) -> None:
        """Call ``callback`` when the client disconnects (a task waits for ``http.disconnect``);
        None stops waiting."""
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None
        if callback is not None:
            self._watcher = asyncio.get_running_loop().create_task(self._watch(callback))

    async def _watch(self, callback: Callable[[], None]) -> None:
        while (await self.receive())["type"] != "http.disconnect":
            pass
        self._watcher = None
        callback()


def replay(body: bytes, receive: Any) -> Any:
    """A ``receive`` that gives the body already read, then the client's own messages."""
    sent = False

    async def receive_() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return receive_


async def read_body(receive: Any, limit: int) -> bytes:
    """Read the request body straight from the ASGI ``receive`` (no Request object)."""
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # http.disconnect
            raise ClientGone
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise body_too_large(limit)
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
