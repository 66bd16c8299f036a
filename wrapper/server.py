"""The HTTP server: uvicorn (uvloop + httptools) with a guard on client connections.

uvicorn 0.54 has no timeout for receiving a request's head: its keep-alive timer starts only
after a response and any byte resets it, and ``limit_concurrency`` counts idle connections
too (it would answer real requests 503 while slow sockets pile up). So the guard, a thin
subclass of uvicorn's httptools protocol, adds:

* a **head timeout** (``VLLM_HEADER_TIMEOUT``): a connection that has not sent a complete
  request head that long after it opened (or after its previous response) is closed, with a
  408 when it had started one;
* a **connection cap** (``VLLM_MAX_CONNECTIONS`` per process, lowered to what
  ``RLIMIT_NOFILE`` allows): at the cap a new connection displaces the oldest one still
  waiting for a request head, so sockets held open without a request cannot lock real clients
  out; only when every connection is busy with a request is the new one refused (503).

The body timeout (``VLLM_BODY_TIMEOUT``, a 408) is enforced where the body is read, in
``wrapper.middleware``. Closes and refusals are counted in
``vllm_wrapper_connections_closed_total{reason}`` and logged (one line per reason and 5 s).
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections import Counter as Tally
from types import FrameType
from typing import Any, ClassVar

import orjson
import uvicorn
from prometheus_client import CollectorRegistry, Counter, Gauge
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .errors import error_body
from .fast_lane import FastExchange
from .settings import Settings

log = logging.getLogger("wrapper.connections")

FD_PER_CONNECTION = 2  # the client's socket and, while a request runs, one to vLLM
FD_RESERVE = 64  # listening socket, logs, the Kubernetes API, DNS...
LOG_EVERY = 5.0  # seconds between two lines counting closed or refused connections


def _raw_error(status: int, reason: str, message: str, extra: bytes = b"") -> bytes:
    body = orjson.dumps(
        error_body(message, "RequestTimeoutError" if status == 408 else "ServiceUnavailableError", None, status)
    )
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n".encode()
        + extra
        + b"\r\n"
        + body
    )


def raise_nofile_limit() -> int:
    """Raise this process's soft ``RLIMIT_NOFILE`` to its hard limit; return the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = 1_048_576 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):  # pragma: no cover - a sandbox refusing it
            pass
    return soft


class ConnectionGuard:
    """Per-process state: connections waiting for a request head, in the order they started."""

    def __init__(self, *, max_connections: int, header_timeout: float, registry: CollectorRegistry | None) -> None:
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.waiting: dict[GuardedHttpToolsProtocol, float] = {}  # insertion order = start order
        self.connections: set[Any] = set()
        self._sweeper: asyncio.TimerHandle | None = None  # armed only while a connection waits
        self._unlogged: Tally[str] = Tally()
        self._logged_at = -LOG_EVERY
        self._log_timer: asyncio.TimerHandle | None = None
        self.closed = Counter(
            "vllm_wrapper_connections_closed",
            "Client connections the wrapper closed or refused (header_timeout, idle_timeout, evicted, over_limit)",
            ["reason"],
            registry=registry,
        )
        for reason in ("header_timeout", "idle_timeout", "evicted", "over_limit"):
            self.closed.labels(reason)
        Gauge(
            "vllm_wrapper_connections_open", "Open client connections (this process)", registry=registry
        ).set_function(lambda: len(self.connections))

    # -- called by the protocol ----------------------------------------------------------------
    def admit(self, conn: GuardedHttpToolsProtocol) -> bool:
        self.connections = conn.connections  # uvicorn's own set (same object for every connection)
        if len(conn.connections) > self.max_connections:
            if self.waiting:
                oldest = next(iter(self.waiting))
                self._close(oldest, "evicted")
            else:
                self._count("over_limit")
                conn.transport.write(_OVER_LIMIT)
                conn.transport.close()
                return False
        self.wait(conn)
        return True

    def wait(self, conn: GuardedHttpToolsProtocol) -> None:
        conn.head_bytes = False
        self.waiting[conn] = time.monotonic()
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(self.header_timeout, self._sweep)

    def done_waiting(self, conn: GuardedHttpToolsProtocol) -> None:
        self.waiting.pop(conn, None)

    # -- internals -------------------------------------------------------------------------------
    def _close(self, conn: GuardedHttpToolsProtocol, reason: str) -> None:
        self.waiting.pop(conn, None)
        self._count(reason)
        transport = conn.transport
        if transport is not None and not transport.is_closing():
            if reason == "header_timeout":
                transport.write(_HEAD_TIMEOUT)
            transport.close()

    def _count(self, reason: str) -> None:
        self.closed.labels(reason).inc()
        self._unlogged[reason] += 1
        if self._log_timer is None:  # one line per 5 s at most, whatever the rate of closes
            delay = max(0.0, self._logged_at + LOG_EVERY - time.monotonic())
            self._log_timer = asyncio.get_running_loop().call_later(delay, self._log_counts)

    def _sweep(self) -> None:
        # One timer, due when the oldest waiting connection's head timeout ends; none while no
        # connection waits, so an idle wrapper is not woken (a periodic sweep cost CPU at rest).
        self._sweeper = None
        cutoff = time.monotonic() - self.header_timeout
        while self.waiting:
            conn, since = next(iter(self.waiting.items()))
            if since > cutoff:
                delay = since - cutoff
                self._sweeper = asyncio.get_running_loop().call_later(delay, self._sweep)
                break
            self._close(conn, "header_timeout" if conn.head_bytes else "idle_timeout")

    def _log_counts(self) -> None:
        self._log_timer = None
        self._logged_at = time.monotonic()
        counts = dict(self._unlogged)
        self._unlogged.clear()
        log.warning(
            "client connections closed or refused",
            extra={"counts": counts, "open": len(self.connections), "max_connections": self.max_connections},
        )


_HEAD_TIMEOUT = b""
_OVER_LIMIT = b""


class OneWriteHead:
    """One response's view of the connection's transport: a fixed-length response's head waits
    for its body, so both leave in one ``send()``.

    uvicorn writes the status line and headers, then the body, in two writes (two syscalls, two
    segments on the wire); nginx sends them in one. A chunked (streamed) response's head and a
    ``100 Continue`` go out at once, so nothing is held while a stream waits for its first event.
    uvicorn writes the body of every non-HEAD fixed-length response (if only ``b""``), and
    ``close()`` flushes, so a held head always leaves.
    """

    __slots__ = ("head", "transport", "waiting_for_head")

    def __init__(self, transport: Any, method: str) -> None:
        self.transport = transport
        self.head: bytes | None = None
        self.waiting_for_head = method != "HEAD"

    def write(self, data: bytes) -> None:
        head = self.head
        if head is not None:
            self.head = None
            self.transport.write(head + data)
        elif self.waiting_for_head and not data.startswith(b"HTTP/1.1 1"):
            self.waiting_for_head = False
            if b"\r\ntransfer-encoding: chunked\r\n" in data:
                self.transport.write(data)
            else:
                self.head = data
        else:
            self.transport.write(data)

    def close(self) -> None:
        if self.head is not None:
            self.transport.write(self.head)
            self.head = None
        self.transport.close()

    def __getattr__(self, name: str) -> Any:  # is_closing, get_extra_info, ...: the transport's
        return getattr(self.transport, name)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol plus :class:`ConnectionGuard`'s head timeout and cap, and the
    fast lane (``wrapper.fast_lane``) for ``POST`` to the pass-through routes."""

    guard: ClassVar[ConnectionGuard | None] = None
    head_bytes = False
    gateway: Any = None  # the app, when it serves fast-lane exchanges (GatewayMiddleware)

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        gateway = self.app
        self.gateway = gateway if getattr(gateway, "fast_paths", None) else None
        if self.guard is not None:
            self.guard.admit(self)

    def data_received(self, data: bytes) -> None:
        self.head_bytes = True
        super().data_received(data)

    def on_headers_complete(self) -> None:
        if self.guard is not None:
            self.guard.done_waiting(self)
        gateway = self.gateway
        if gateway is not None:
            path = gateway.fast_paths.get(self.url)
            if path is not None and self.parser.get_method() == b"POST" and not self.parser.should_upgrade():
                self._fast_lane(gateway, path)
                return
        super().on_headers_complete()
        # The cycle's task has not run yet: it writes through OneWriteHead from its first byte.
        cycle = self.cycle
        if cycle is not None and cycle.transport is self.transport:
            cycle.transport = OneWriteHead(self.transport, cycle.scope["method"])  # type: ignore[assignment]

    def _fast_lane(self, gateway: Any, path: str) -> None:
        # What uvicorn's on_headers_complete does with a cycle, with a FastExchange instead.
        http_version = self.parser.get_http_version()
        keep_alive = http_version != "1.0" and self.parser.should_keep_alive()
        if http_version != "1.1":
            self.scope["http_version"] = http_version
        exchange = FastExchange(self, gateway, path, keep_alive)
        previous = self.cycle
        self.cycle = exchange  # type: ignore[assignment]
        if previous is None or previous.response_complete:
            self._start_asgi_task(exchange, self.app)  # type: ignore[arg-type]
        else:  # pipelined: runs when the previous response is complete
            self.flow.pause_reading()
            self.pipeline.appendleft((exchange, self.app))  # type: ignore[arg-type]

    def on_body(self, body: bytes) -> None:
        cycle: object = self.cycle
        if type(cycle) is FastExchange:
            cycle.got_body(body)
        else:
            super().on_body(body)

    def on_message_complete(self) -> None:
        cycle: object = self.cycle
        if type(cycle) is FastExchange:
            cycle.got_end()
        else:
            super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # uvicorn armed its keep-alive timer: the connection now waits for its next request.
        if self.guard is not None and self.timeout_keep_alive_task is not None:
            self.guard.wait(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.guard is not None:
            self.guard.done_waiting(self)
        super().connection_lost(exc)
        lost: list[object] = [self.cycle, *(c for c, _ in self.pipeline)]
        for cycle in lost:
            if type(cycle) is FastExchange and not cycle.response_complete:
                cycle.lost()


def install_guard(settings: Settings, registry: CollectorRegistry | None) -> ConnectionGuard:
    """Configure this process's guard (call once per process, before serving)."""
    global _HEAD_TIMEOUT, _OVER_LIMIT
    nofile = raise_nofile_limit()
    cap = min(settings.max_connections, max(16, (nofile - FD_RESERVE) // FD_PER_CONNECTION))
    if cap < settings.max_connections:
        log.warning(
            "connection cap lowered to fit the file-descriptor limit",
            extra={"max_connections": cap, "configured": settings.max_connections, "rlimit_nofile": nofile},
        )
    _HEAD_TIMEOUT = _raw_error(
        408, "Request Timeout", f"request head not received within {settings.header_timeout:g} s"
    )
    _OVER_LIMIT = _raw_error(
        503, "Service Unavailable", f"too many open connections (the limit is {cap})", b"retry-after: 1\r\n"
    )
    guard = ConnectionGuard(max_connections=cap, header_timeout=settings.header_timeout, registry=registry)
    GuardedHttpToolsProtocol.guard = guard
    return guard


class QuietServer(uvicorn.Server):
    """uvicorn's server, woken once a second (to renew the ``date`` header) instead of ten times,
    and at once by SIGTERM or SIGINT.

    uvicorn polls ``should_exit`` every 0.1 s: most of an idle wrapper's CPU, and a share of
    every request's when requests are spaced out (benchmarks/wrapper_bench.py, sequential rows).
    """

    tick_seconds = 1.0
    _wake: asyncio.Future[None] | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    async def main_loop(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        ticks = 0
        while not await self.on_tick(ticks * 10):  # on_tick renews the date when its count % 10 == 0
            ticks += 1
            wake = self._wake = loop.create_future()
            timer = loop.call_later(self.tick_seconds, _resolve, wake)
            await wake
            timer.cancel()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(_resolve, self._wake)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def serve(app: Any, settings: Settings) -> None:
    """Run ``app`` in this process until SIGTERM or SIGINT (``python -m wrapper``, one worker)."""
    config = uvicorn.Config(app, **uvicorn_options(settings))
    server = QuietServer(config)
    server.run()
    if not server.started:
        raise SystemExit(3)  # uvicorn's STARTUP_FAILURE: the port was taken, or startup failed


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    return dict(
        host=settings.wrapper_host,
        port=settings.wrapper_port,
        loop="uvloop",
        http=GuardedHttpToolsProtocol,
        access_log=False,
        log_config=None,
        log_level=settings.log_level.lower(),
        server_header=False,
        proxy_headers=False,
        timeout_keep_alive=settings.keepalive_timeout,
        timeout_graceful_shutdown=5,
    )
