"""A small HTTP/1.1 client for the model server: keep-alive connections per origin, httptools.

The wrapper sends every request to vLLM through this client (the Kubernetes API still goes
through aiohttp). It does what the hot path needs and nothing more: one request at a time per
connection, each request written with one ``send()``, the response parsed by httptools (the
parser uvicorn runs on the client side of the wrapper), its body read whole or relayed piece by
piece as it arrives. Under the wrapper benchmark's load aiohttp's client cost about a third of
the wrapper's CPU per request (request and response objects, header multidicts, tracing
hooks, a timer per read); see ``wrapper/README.md`` (Performance).

Errors: :class:`ConnectError` (no connection: refused, unreachable, name not resolved, connect
timeout) and :class:`ServerDisconnected` (the connection closed before a response head) mean
the model server did not take the request, so the caller may try another replica;
:class:`ResponseBroken` means the response broke off after its head. ``TimeoutError``: a
silent stream after ``read_timeout`` seconds without a byte, or a response not complete
(connect, head and body) within ``total_timeout`` seconds of the call.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit

import httptools

HIGH_WATER = 256 * 1024  # unread body bytes past which the socket stops being read


class UpstreamError(Exception):
    """Talking to the model server failed."""


class ConnectError(UpstreamError):
    """No connection could be opened."""


class ServerDisconnected(UpstreamError):
    """The connection closed (or was reset) before a response head arrived."""


class ResponseBroken(UpstreamError):
    """The response broke off, or was not HTTP, after the request was sent."""


class Origin:
    """Where connections go (scheme, host, port) and the bytes every request to it starts with."""

    __slots__ = ("_addr", "_addr_until", "host", "host_header", "idle", "port", "tls")

    def __init__(self, scheme: str, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.tls = scheme == "https"
        default = 443 if self.tls else 80
        shown = f"[{host}]" if ":" in host else host
        self.host_header = (shown if port == default else f"{shown}:{port}").encode("idna")
        self.idle: list[Connection] = []  # most recently used last
        self._addr: tuple | None = None
        self._addr_until = 0.0

    async def address(self, loop: asyncio.AbstractEventLoop, ttl: float) -> tuple:
        """A resolved address, kept ``ttl`` seconds (a rescheduled pod's name gets its new IP)."""
        now = time.monotonic()
        if self._addr is None or now >= self._addr_until:
            infos = await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
            if not infos:  # pragma: no cover - getaddrinfo raises instead
                raise OSError(f"no address for {self.host}")
            family, _, proto, _, addr = infos[0]
            self._addr = (family, proto, addr)
            self._addr_until = now + ttl
        return self._addr

    def forget_address(self) -> None:
        self._addr = None


class Client:
    """Keep-alive connections to any number of origins (one pool per ``scheme://host:port``)."""

    def __init__(self, *, keepalive_timeout: float = 4.0, dns_ttl: float = 5.0) -> None:
        self.keepalive_timeout = keepalive_timeout
        self.dns_ttl = dns_ttl
        self._origins: dict[str, Origin] = {}
        self._targets: dict[str, tuple[Origin, bytes]] = {}
        self._ssl: ssl.SSLContext | None = None
        self._closed = False
        self._sweeper: asyncio.TimerHandle | None = None

    def _target(self, url: str) -> tuple[Origin, bytes]:
        t = self._targets.get(url)
        if t is None:
            u = urlsplit(url)
            if u.scheme not in ("http", "https") or not u.hostname:
                raise ValueError(f"not an http(s) URL: {url}")
            key = f"{u.scheme}://{u.hostname}:{u.port or (443 if u.scheme == 'https' else 80)}"
            origin = self._origins.get(key)
            if origin is None:
                origin = self._origins[key] = Origin(
                    u.scheme, u.hostname, u.port or (443 if u.scheme == "https" else 80)
                )
            path = (u.path or "/") + (f"?{u.query}" if u.query else "")
            if len(self._targets) >= 4096:  # replicas come and go (discovery): stay bounded
                self._targets.clear()
            t = self._targets[url] = (origin, path.encode())
        return t

    async def request(
        self,
        method: str,
        url: str,
        body: bytes | None,
        headers: bytes,
        *,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
        total_timeout: float | None = None,
    ) -> Response:
        """Send one request; return once the response head arrived (the body is read from it).

        ``headers`` are complete header lines (``b"Name: value\\r\\n"`` each) sent after ``Host``.
        ``total_timeout`` bounds the whole exchange, body included: past it the response fails
        with ``TimeoutError`` and its connection closes (one timer, no ``asyncio.timeout``
        around the caller: that cost 3-4% of the wrapper's CPU per request under load).
        A connection taken from the pool that turns out to have been closed by the server before
        answering is replaced once by a fresh one: the request never reached a live server.
        """
        origin, target = self._target(url)
        loop = asyncio.get_running_loop()
        length = len(body) if body else 0
        head = b"%s %s HTTP/1.1\r\nHost: %s\r\n%sContent-Length: %d\r\n\r\n" % (
            method.encode(),
            target,
            origin.host_header,
            headers,
            length,
        )
        data = head + body if body else head
        if total_timeout is not None and total_timeout <= 0:
            raise TimeoutError  # out of time already: nothing is sent
        until = None if total_timeout is None else time.monotonic() + total_timeout
        while True:
            conn = self._pooled(origin)
            reused = conn is not None
            if conn is None:
                conn = await self._open(origin, loop, connect_timeout, until)
            left = None if until is None else until - time.monotonic()
            response = conn.send(data, read_timeout, left)
            try:
                await response.head
            except ServerDisconnected:
                if reused:
                    continue
                raise
            except BaseException:
                response.close()
                raise
            return response

    def _pooled(self, origin: Origin) -> Connection | None:
        idle = origin.idle
        while idle:
            conn = idle.pop()
            if conn.usable(self.keepalive_timeout):
                return conn
            conn.close()
        return None

    async def _open(
        self, origin: Origin, loop: asyncio.AbstractEventLoop, timeout: float | None, until: float | None
    ) -> Connection:
        """A new connection within ``timeout`` (``ConnectError`` past it), and before ``until``
        (``TimeoutError`` past it: the caller's whole time ran out, not the connect's)."""
        left = None if until is None else until - time.monotonic()
        if left is not None and left <= 0:
            raise TimeoutError
        bounded_by_until = left is not None and (timeout is None or left < timeout)
        try:
            async with asyncio.timeout(left if bounded_by_until else timeout):
                family, proto, addr = await origin.address(loop, self.dns_ttl)
                tls = self._tls() if origin.tls else None
                _, conn = await loop.create_connection(
                    lambda: Connection(self, origin),
                    addr[0],
                    addr[1],
                    family=family,
                    proto=proto,
                    ssl=tls,
                    server_hostname=origin.host if tls else None,
                )
        except TimeoutError:
            origin.forget_address()
            if bounded_by_until:
                raise
            raise ConnectError(f"connect to {origin.host}:{origin.port} timed out") from None
        except OSError as exc:  # refused, unreachable, not resolved (socket.gaierror), TLS
            origin.forget_address()
            raise ConnectError(f"cannot connect to {origin.host}:{origin.port}: {exc.strerror or exc}") from None
        return conn

    def _tls(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    def give_back(self, conn: Connection) -> None:
        if self._closed:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        conn.origin.idle.append(conn)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(self.keepalive_timeout, self._sweep)

    def _sweep(self) -> None:
        """Close connections idle past the keep-alive timeout (before the server does)."""
        self._sweeper = None
        left = False
        for origin in self._origins.values():
            keep = []
            for c in origin.idle:
                if c.usable(self.keepalive_timeout):
                    keep.append(c)
                else:
                    c.close()
            origin.idle[:] = keep
            left = left or bool(keep)
        if left and not self._closed:
            self._sweeper = asyncio.get_running_loop().call_later(self.keepalive_timeout / 2, self._sweep)

    async def close(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for origin in self._origins.values():
            for c in origin.idle:
                c.close()
            origin.idle.clear()


class Connection(asyncio.Protocol):
    """One socket to an origin; carries one exchange at a time."""

    def __init__(self, client: Client, origin: Origin) -> None:
        self.client = client
        self.origin = origin
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: Response | None = None
        self.closed = False
        self.idle_since = 0.0
        self.paused = False
        self.interim = False

    def usable(self, keepalive_timeout: float) -> bool:
        return not self.closed and time.monotonic() - self.idle_since < keepalive_timeout

    def send(self, data: bytes, read_timeout: float | None, total_timeout: float | None = None) -> Response:
        assert self.transport is not None and self.response is None
        self.response = Response(self, read_timeout, total_timeout)
        self.transport.write(data)
        return self.response

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # -- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        r = self.response
        if r is None:  # bytes nobody asked for: the connection cannot be trusted
            self.close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            r.fail(ResponseBroken("the model server's response is not valid HTTP"))
            self.close()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        r = self.response
        if r is not None:
            r.lost(exc)

    # -- httptools callbacks ------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        r = self.response
        if r is not None:
            r.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        r = self.response
        if r is not None:
            status = self.parser.get_status_code()
            if status < 200:  # an interim response (RFC 9110, 15.2): the real one follows
                self.interim = True
                r.headers.clear()
                return
            r.status = status
            r.got_head()

    def on_body(self, body: bytes) -> None:
        r = self.response
        if r is not None:
            r.got_body(body)

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        r = self.response
        if r is not None:
            r.got_end(self.parser.should_keep_alive())

    # -- back pressure -------------------------------------------------------------------------
    def pause(self) -> None:
        if not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.paused and self.transport is not None and not self.closed:
            self.paused = False
            self.transport.resume_reading()

    def finished(self, reusable: bool) -> None:
        """The exchange is over: back to the pool, or closed."""
        self.response = None
        if reusable and not self.closed:
            self.client.give_back(self)
        else:
            self.close()


class Headers(dict[str, str]):
    """Response headers, names lower-cased (the last of repeated names wins)."""

    def get(self, name: str, default=None):
        return dict.get(self, name.lower(), default)


class Response:
    """A response whose head arrived; its body is read with :meth:`read` or :meth:`iter_chunks`.

    :meth:`release` (the body was read) puts the connection back in the pool; :meth:`close`
    drops it, which is how the model server learns that nobody reads a stream any more.
    Callbacks added with :meth:`on_release` run once, when either happens.
    """

    def __init__(self, conn: Connection, read_timeout: float | None, total_timeout: float | None = None) -> None:
        loop = conn.loop
        self.conn: Connection | None = conn
        self.status = 0
        self.headers = Headers()
        self.head: asyncio.Future[None] = loop.create_future()
        self._chunks: list[bytes] = []
        self._size = 0
        self._streaming = False
        self._waiter: asyncio.Future[None] | None = None
        self._ended = False
        self._keep_alive = False
        self._error: BaseException | None = None
        self._callbacks: list[Callable[[], None]] = []
        self._loop = loop
        self._read_timeout = read_timeout
        self._last_byte = 0.0
        self._timer: asyncio.TimerHandle | None = None
        if read_timeout is not None:
            self._last_byte = loop.time()
            self._timer = loop.call_at(self._last_byte + read_timeout, self._check_silence)
        self._deadline: asyncio.TimerHandle | None = None
        if total_timeout is not None:
            self._deadline = loop.call_later(max(total_timeout, 0.0), self._past_deadline)

    # -- fed by the connection ---------------------------------------------------------------
    def got_head(self) -> None:
        if not self.head.done():
            self.head.set_result(None)

    def got_body(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        if self._timer is not None:
            self._last_byte = self._loop.time()
        if self._streaming and self._size > HIGH_WATER and self.conn is not None:
            self.conn.pause()
        self._wake()

    def got_end(self, keep_alive: bool) -> None:
        self._ended = True
        self._keep_alive = keep_alive
        self._stop_timers()
        self._wake()

    def lost(self, exc: Exception | None) -> None:
        if self._ended:
            return
        if not self.head.done():
            self.fail(ServerDisconnected("the model server closed the connection before answering"))
        elif "content-length" not in self.headers and "transfer-encoding" not in self.headers:
            self.got_end(False)  # a body delimited by the connection's end (RFC 9112, 6.3)
        else:
            self.fail(ResponseBroken("the model server closed the connection mid-response"))

    def fail(self, exc: BaseException) -> None:
        if self._error is None and not self._ended:
            self._error = exc
            self._stop_timers()
            if not self.head.done():
                self.head.set_exception(exc)
                self.head.exception()  # retrieved here: a waiter may already be gone
            self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)

    def _check_silence(self) -> None:
        self._timer = None
        if self._ended or self._error is not None or self._read_timeout is None:
            return
        due = self._last_byte + self._read_timeout
        if self._loop.time() >= due:
            self.fail(TimeoutError())
            self.close()
        else:
            self._timer = self._loop.call_at(due, self._check_silence)

    def _past_deadline(self) -> None:
        self._deadline = None
        if not self._ended and self._error is None:
            self.fail(TimeoutError())
            self.close()

    def _stop_timers(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    # -- read by the wrapper -----------------------------------------------------------------
    async def _wait(self) -> None:
        self._waiter = self._loop.create_future()
        if self.conn is not None:
            self.conn.resume()
        await self._waiter

    async def read(self) -> bytes:
        """The whole body."""
        while not self._ended:
            if self._error is not None:
                raise self._error
            await self._wait()
        chunks = self._chunks
        self._chunks = []
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives (chunked framing removed), in the pieces the socket gave."""
        self._streaming = True
        while True:
            if self._chunks:
                chunks = self._chunks
                self._chunks = []
                self._size = 0
                yield chunks[0] if len(chunks) == 1 else b"".join(chunks)
            elif self._ended:
                return
            elif self._error is not None:
                raise self._error
            else:
                await self._wait()

    def on_release(self, callback: Callable[[], None]) -> None:
        if self.conn is None:
            callback()
        else:
            self._callbacks.append(callback)

    def release(self) -> None:
        """Done with it: the connection goes back to the pool when the body was read to its end."""
        self._finish(self._ended and self._keep_alive and not self._chunks)

    def close(self) -> None:
        self._finish(False)

    def _finish(self, reusable: bool) -> None:
        conn = self.conn
        if conn is None:
            return
        self.conn = None
        self._stop_timers()
        if not self._ended and self._error is None:
            self._error = ResponseBroken("closed by the wrapper")
            self._wake()  # a reader waiting for the next piece gets the error
        conn.finished(reusable)
        callbacks, self._callbacks = self._callbacks, []
        for cb in callbacks:
            cb()
