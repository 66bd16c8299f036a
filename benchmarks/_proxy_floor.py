"""The least a Python reverse proxy of the wrapper's design costs per request: the floor
``wrapper_bench.py --floor`` measures the wrapper against.

    python benchmarks/_proxy_floor.py PORT UPSTREAM_BASE_URL

An asyncio protocol on uvloop parses each request with httptools, runs one task per request
(as any proxy that awaits its upstream must), sends the body to ``UPSTREAM/chat/completions``
through the wrapper's own HTTP/1.1 client (``wrapper.http1``: keep-alive pool, one write per
request) and writes the answer back in one write. Nothing else: no checks, no metrics, no log,
no timeouts, no error handling; it is a measuring stick, not a server to run.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import httptools
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wrapper import http1

HEADERS = b"Content-Type: application/json\r\n"


class FloorProxy(asyncio.Protocol):
    def __init__(self, client: http1.Client, target: str) -> None:
        self.client = client
        self.target = target
        self.parser = httptools.HttpRequestParser(self)
        self.body: list[bytes] = []
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_begin(self) -> None:
        self.body = []

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        asyncio.get_running_loop().create_task(self.answer(b"".join(self.body)))

    async def answer(self, body: bytes) -> None:
        resp = await self.client.request("POST", self.target, body, HEADERS)
        data = await resp.read()
        resp.release()
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 %d OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
            % (resp.status, len(data), data)
        )


async def serve(port: int, upstream: str) -> None:
    client = http1.Client()
    target = upstream.rstrip("/") + "/chat/completions"
    server = await asyncio.get_running_loop().create_server(lambda: FloorProxy(client, target), "127.0.0.1", port)
    await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1]), sys.argv[2]))
