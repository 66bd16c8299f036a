"""The servers ``server_floor_bench.py`` compares, each answering every request with one fixed
JSON body and no upstream: what a server design costs per request before any proxying; and
the least a Python reverse proxy of the wrapper's design costs (``wrapper_bench.py --floor``).

    python benchmarks/_floor_servers.py protocol|uvicorn|guarded PORT
    python benchmarks/_floor_servers.py proxy|relay PORT UPSTREAM_BASE_URL

- ``protocol``: an asyncio protocol on uvloop that parses with httptools and runs one task per
  request, as any proxy that awaits its upstream must; the least a Python server of this
  design can cost.
- ``uvicorn``: uvicorn (uvloop + httptools, access log off) with a bare ASGI app.
- ``guarded``: the same app behind the wrapper's own server, ``wrapper.server.serve`` with
  ``GuardedHttpToolsProtocol`` (head timeout, connection cap, one-write responses).
- ``proxy``: ``protocol`` that sends each request's body to ``UPSTREAM/chat/completions``
  through the wrapper's own HTTP/1.1 client (``wrapper.http1``: keep-alive pool, one write per
  request) and writes the answer back in one write. No checks, metrics, log, timeouts or error
  handling: a measuring stick, not a server to run.
- ``relay``: the same relay with no task, no future and no coroutine: the upstream request is
  written from the client's parser callback, the answer from the upstream's. The difference
  from ``proxy`` is what a task per request, its futures and the wrapper's HTTP client add.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

BODY = (
    b'{"id":"cmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi"}}]}'
)
ANSWER = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(BODY), BODY)
HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(BODY))]


class OneTaskPerRequest(asyncio.Protocol):
    def __init__(self) -> None:
        import httptools

        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        asyncio.get_running_loop().create_task(self.answer())

    async def answer(self) -> None:
        await asyncio.sleep(0)  # where a proxy awaits its upstream
        assert self.transport is not None
        self.transport.write(ANSWER)


class FloorProxy(OneTaskPerRequest):
    def __init__(self, client, target: str) -> None:
        super().__init__()
        self.client = client
        self.target = target
        self.body: list[bytes] = []

    def on_message_begin(self) -> None:
        self.body = []

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    async def answer(self) -> None:
        resp = await self.client.request(
            "POST", self.target, b"".join(self.body), b"Content-Type: application/json\r\n"
        )
        data = await resp.read()
        resp.release()
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 %d OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
            % (resp.status, len(data), data)
        )


class RelayUpstream(asyncio.Protocol):
    """One pooled keep-alive connection to the upstream; answers ``client`` from its callback."""

    def __init__(self, pool: list[RelayUpstream]) -> None:
        import httptools

        self.pool = pool
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.client: Relay | None = None
        self.body: list[bytes] = []

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        data, self.body = b"".join(self.body), []
        client, self.client = self.client, None
        self.pool.append(self)
        assert client is not None and client.transport is not None
        client.transport.write(
            b"HTTP/1.1 %d OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
            % (self.parser.get_status_code(), len(data), data)
        )

    def send(self, client: Relay, request: bytes) -> None:
        assert self.transport is not None
        self.client = client
        self.transport.write(request)


class Relay(OneTaskPerRequest):
    def __init__(self, pool: list[RelayUpstream], host: str, port: int, target: bytes) -> None:
        super().__init__()
        self.pool, self.host, self.port, self.target = pool, host, port, target
        self.body: list[bytes] = []

    def on_message_begin(self) -> None:
        self.body = []

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        body = b"".join(self.body)
        request = b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
            self.target,
            self.host.encode(),
            len(body),
            body,
        )
        if self.pool:
            self.pool.pop().send(self, request)
        else:  # a new connection: the only await, once per pooled connection
            asyncio.get_running_loop().create_task(self._connect_and_send(request))

    async def _connect_and_send(self, request: bytes) -> None:
        loop = asyncio.get_running_loop()
        _, upstream = await loop.create_connection(lambda: RelayUpstream(self.pool), self.host, self.port)
        upstream.send(self, request)


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


def main(kind: str, port: int, upstream: str | None = None) -> None:
    if kind == "relay":
        from urllib.parse import urlsplit

        import uvloop

        u = urlsplit((upstream or "").rstrip("/") + "/chat/completions")
        host, uport, target = u.hostname or "127.0.0.1", u.port or 80, u.path.encode()

        async def serve_relay() -> None:
            pool: list[RelayUpstream] = []
            loop = asyncio.get_running_loop()
            server = await loop.create_server(lambda: Relay(pool, host, uport, target), "127.0.0.1", port)
            await server.serve_forever()

        uvloop.run(serve_relay())
    elif kind == "proxy":
        import uvloop

        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from wrapper import http1

        async def serve_proxy() -> None:
            client = http1.Client()
            target = (upstream or "").rstrip("/") + "/chat/completions"
            loop = asyncio.get_running_loop()
            server = await loop.create_server(lambda: FloorProxy(client, target), "127.0.0.1", port)
            await server.serve_forever()

        uvloop.run(serve_proxy())
    elif kind == "protocol":
        import uvloop

        async def serve() -> None:
            server = await asyncio.get_running_loop().create_server(OneTaskPerRequest, "127.0.0.1", port)
            await server.serve_forever()

        uvloop.run(serve())
    elif kind == "uvicorn":
        import uvicorn

        uvicorn.run(
            app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", access_log=False, log_level="warning"
        )
    elif kind == "guarded":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from wrapper.server import install_guard, serve
        from wrapper.settings import Settings

        settings = Settings(
            base_url="http://127.0.0.1:9/v1", wrapper_host="127.0.0.1", wrapper_port=port, log_level="WARNING"
        )
        install_guard(settings, None)
        serve(app, settings)
    else:
        raise SystemExit(f"unknown server {kind!r}: protocol, uvicorn, guarded, proxy or relay")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), *sys.argv[3:])
