"""The fast lane: ``POST`` to the pass-through routes served straight from the connection.

uvicorn turns every request into an ASGI exchange: a scope, a ``RequestResponseCycle`` with
its ``asyncio.Event``, a dict per message in each direction, a pass over the response headers.
In front of vLLM that cycle was most of the gap between the wrapper's CPU per request and
nginx's (``benchmarks/server_floor_bench.py``: about 0.25 ms of a spaced-out request). So for
``POST /v1/chat/completions`` and ``POST /v1/completions`` (the exact paths, no query string)
the wrapper's protocol (``wrapper.server.GuardedHttpToolsProtocol``) creates a
:class:`FastExchange` instead, and the gateway (``wrapper.middleware``) serves it through the
same checks, in the same order, as an ASGI request. Everything else goes through uvicorn.

A :class:`FastExchange` stands where uvicorn's protocol expects its cycle (``self.cycle``, the
pipeline queue), so keep-alive, pipelining, graceful shutdown and the connection guard treat
both alike. It gathers the body as the parser delivers it (at most ``VLLM_MAX_BODY_BYTES``,
the rest dropped and answered 413), writes a fixed-length answer in one ``send()``, and offers
ASGI ``receive``/``send`` for streamed answers (chunked, with uvicorn's write flow control).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE

from .errors import APIError, ClientGone, body_too_large, body_too_slow

log = logging.getLogger("wrapper")

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class _NoEvent:
    """uvicorn's protocol sets its cycle's ``message_event`` on a disconnect; this one has none."""

    @staticmethod
    def set() -> None:
        pass


_NO_EVENT = _NoEvent()


def _nothing() -> None:
    pass


class FastExchange:
    """One fast-lane request on one connection: the request head, its body, and its answer."""

    __slots__ = (
        "_body_taken",
        "_chunked",
        "_disconnect",
        "_on_gone",
        "_waiter",
        "chunks",
        "default_headers",
        "disconnected",
        "expect_100_continue",
        "flow",
        "gateway",
        "keep_alive",
        "limit",
        "loop",
        "more_body",
        "on_response",
        "response_complete",
        "response_started",
        "rid",
        "scope",
        "size",
        "status",
        "too_large",
        "transport",
    )

    message_event = _NO_EVENT

    def __init__(self, protocol: Any, gateway: Any, path: str, keep_alive: bool) -> None:
        self.gateway = gateway
        scope = self.scope = protocol.scope  # built by uvicorn's on_message_begin
        scope["method"] = "POST"
        scope["path"] = path
        scope["raw_path"] = path.encode()
        scope["query_string"] = b""
        scope["extensions"] = {"wrapper.exchange": self}  # UpstreamStream's when_gone
        self.transport = protocol.transport
        self.flow = protocol.flow
        self.loop: asyncio.AbstractEventLoop = protocol.loop
        self.default_headers: list[tuple[bytes, bytes]] = protocol.server_state.default_headers
        self.on_response: Callable[[], None] = protocol.on_response_complete
        self.keep_alive = keep_alive
        self.expect_100_continue = protocol.expect_100_continue
        self.limit: int = gateway.max_body
        self.chunks: list[bytes] = []
        self.size = 0
        self.too_large = False
        self.more_body = True
        self.disconnected = False
        self.response_started = False
        self.response_complete = False
        self.status = 500
        self.rid = b""
        self._chunked = False
        self._body_taken = False
        self._waiter: asyncio.Future[None] | None = None
        self._disconnect: asyncio.Future[None] | None = None
        self._on_gone: Callable[[], None] | None = None

    # -- fed by the protocol -------------------------------------------------------------------
    def got_body(self, data: bytes) -> None:
        if self.too_large:
            return
        self.size += len(data)
        if self.size > self.limit:  # answered 413 (and closed) once the task looks
            self.too_large = True
            self.chunks = []
        else:
            self.chunks.append(data)
        self._wake()

    def got_end(self) -> None:
        self.more_body = False
        self._wake()

    def lost(self) -> None:
        """The connection closed (uvicorn's protocol has already set ``disconnected``)."""
        self.disconnected = True
        self._wake()
        disconnect, self._disconnect = self._disconnect, None
        if disconnect is not None and not disconnect.done():
            disconnect.set_result(None)
        callback, self._on_gone = self._on_gone, None
        if callback is not None:
            callback()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # -- run by uvicorn's protocol (as it runs a cycle) ------------------------------------------
    async def run_asgi(self, app: object) -> None:
        try:
            await self.gateway.serve(self)
        except BaseException as exc:  # the gateway answers its own errors: this is a bug
            log.error("unhandled error in the fast lane", exc_info=exc)
            if not self.response_started and not self.disconnected:
                self.keep_alive = False
                self.respond(500, [(b"content-type", b"text/plain; charset=utf-8")], b"Internal Server Error")
            else:
                self.transport.close()
        else:
            if not self.response_complete and not self.disconnected:  # pragma: no cover - a bug
                log.error("fast lane returned without completing its response")
                self.transport.close()
        finally:
            self.on_response = _nothing

    # -- what the gateway uses (the same names as wrapper.asgi_exchange.AsgiExchange) --------------
    async def body(self, timeout: float) -> bytes:
        """The whole body: ``ClientGone``, or an ``APIError`` 413 (too large) or 408 (too slow)."""
        if self.more_body and not self.too_large and not self.disconnected:
            if self.expect_100_continue and not self.transport.is_closing():
                self.expect_100_continue = False
                self.transport.write(CONTINUE)
            try:
                async with asyncio.timeout(timeout):
                    while self.more_body and not self.too_large and not self.disconnected:
                        self._waiter = self.loop.create_future()
                        await self._waiter
            except TimeoutError:
                raise body_too_slow(timeout) from None
        if self.disconnected:
            raise ClientGone
        if self.too_large:
            raise body_too_large(self.limit)
        self._body_taken = True
        chunks = self.chunks
        self.chunks = []
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def when_gone(self, callback: Callable[[], None] | None) -> None:
        """Call ``callback`` when the client disconnects (at once if it already has); None clears it."""
        if callback is not None and self.disconnected:
            callback()
        else:
            self._on_gone = callback

    async def answer(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes | memoryview) -> None:
        self.respond(status, headers, body)

    async def stream(self, response: Any) -> None:
        """Send an ASGI response (a stream) through :meth:`send`."""
        await response(self.scope, self.receive, self.send)

    async def call_app(self, app: Any, receive: Any = None) -> None:
        await app(self.scope, receive or self.receive, self.send)

    def respond(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes | memoryview) -> None:
        """A whole fixed-length answer in one write. ``headers``: no ``content-length``."""
        if self.disconnected:
            return
        if self.response_started:  # pragma: no cover - a bug
            raise RuntimeError("response already started")
        self.response_started = True
        self.status = status
        out: list[bytes | memoryview] = [STATUS_LINE[status]]
        for name, value in self.default_headers:
            out += (name, b": ", value, b"\r\n")
        for name, value in headers:
            if name == b"connection":  # only ever "close" (408, 413, 500): written once, below
                self.keep_alive = False
            else:
                out += (name, b": ", value, b"\r\n")
        out.append(b"x-request-id: %s\r\ncontent-length: %d\r\n" % (self.rid, len(body)))
        if not self.keep_alive:
            out.append(b"connection: close\r\n")
        out += (b"\r\n", body)
        self.transport.write(b"".join(out))
        self._complete()

    def _complete(self) -> None:
        self.response_complete = True
        disconnect = self._disconnect  # as in ASGI: after the response, receive() says disconnect
        if disconnect is not None and not disconnect.done():
            disconnect.set_result(None)
        if not self.keep_alive:
            self.transport.close()
        self.on_response()

    # -- ASGI, for streamed answers ------------------------------------------------------------------
    async def receive(self) -> dict[str, Any]:
        if not self._body_taken and not self.disconnected:
            try:
                body = await self.body(self.gateway.body_timeout)
            except (ClientGone, APIError):
                return {"type": "http.disconnect"}
            return {"type": "http.request", "body": body, "more_body": False}
        if not self.disconnected and not self.response_complete:
            if self._disconnect is None:
                self._disconnect = self.loop.create_future()
            await asyncio.shield(self._disconnect)  # several waiters may share it
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if self.disconnected:
            return
        if not self.response_started:
            if message["type"] != "http.response.start":
                raise RuntimeError(f"expected http.response.start, got {message['type']!r}")
            self.response_started = True
            status = self.status = message["status"]
            out = [STATUS_LINE[status]]
            for name, value in self.default_headers:
                out += (name, b": ", value, b"\r\n")
            fixed = False
            for name, value in message.get("headers", ()):
                if name == b"content-length":
                    fixed = True
                elif name == b"connection":
                    self.keep_alive = False
                    continue
                out += (name, b": ", value, b"\r\n")
            out.append(b"x-request-id: %s\r\n" % self.rid)
            if not fixed:
                self._chunked = True
                out.append(b"transfer-encoding: chunked\r\n")
            if not self.keep_alive:
                out.append(b"connection: close\r\n")
            out.append(b"\r\n")
            self.transport.write(b"".join(out))
        elif not self.response_complete:
            if message["type"] != "http.response.body":
                raise RuntimeError(f"expected http.response.body, got {message['type']!r}")
            body = message.get("body", b"")
            more = message.get("more_body", False)
            if self._chunked:
                if body:
                    self.transport.write(b"%x\r\n%s\r\n%s" % (len(body), body, b"" if more else b"0\r\n\r\n"))
                elif not more:
                    self.transport.write(b"0\r\n\r\n")
            elif body:
                self.transport.write(body)
            if not more:
                self._complete()
        else:
            raise RuntimeError(f"unexpected {message['type']!r} after the response completed")
