"""The servers ``server_floor_bench.py`` compares, each answering every request with one fixed
JSON body and no upstream: what a server design costs per request before any proxying; and
the least a Python reverse proxy of the wrapper's design costs (``wrapper_bench.py --floor``).

    python benchmarks/_floor_servers.py protocol|uvicorn|guarded PORT
    python benchmarks/_floor_servers.py proxy PORT UPSTREAM_BASE_URL

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
    if kind == "proxy":
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
        raise SystemExit(f"unknown server {kind!r}: protocol, uvicorn, guarded or proxy")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), *sys.argv[3:])
