"""Relay an upstream SSE stream to the client, and cancel upstream when the client leaves."""

from __future__ import annotations

import asyncio
import logging

import orjson
from starlette.responses import Response

from . import http1
from .errors import error_body
from .limits import note_events
from .metrics import Metrics
from .sse import EventSplitter, event_data

log = logging.getLogger("wrapper.stream")

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


def error_event(message: str, status: int, *, named: bool = False) -> bytes:
    kind = "BadGatewayError" if status == 502 else "GatewayTimeoutError"
    data = orjson.dumps(error_body(message, kind, None, status))
    return (b"event: error\n" if named else b"") + b"data: " + data + b"\n\n"


class Relay:
    """Per-stream hooks. The default forwards bytes unchanged and only watches for usage."""

    named_error_events = False

    def __init__(self, metrics: Metrics, route: str) -> None:
        self.metrics = metrics
        self.route = route
        self._split = EventSplitter()

    def transform(self, chunk: bytes) -> bytes:
        note_events(chunk.count(b"\n\n"))  # the token-limit estimate when no usage comes
        if b'"usage":{' in chunk or self._split._buf:
            for ev in self._split.feed(chunk):
                if b'"usage":{' in ev:
                    self._usage(ev)
        return chunk

    def _usage(self, ev: bytes) -> None:
        data = event_data(ev)
        try:
            obj = orjson.loads(data) if data else None
        except orjson.JSONDecodeError:
            return
        if isinstance(obj, dict):
            self.metrics.count_usage(self.route, obj.get("usage"))


class UpstreamStream(Response):
    """An ASGI response that pumps ``resp`` to the client through ``relay``.

    When the client goes away the upstream connection is closed, which is how vLLM learns to
    abort the generation.
    """

    def __init__(self, resp: http1.Response, relay: Relay, metrics: Metrics) -> None:
        self.resp = resp
        self.relay = relay
        self.metrics = metrics
        self.status_code = 200
        self.background = None

    async def __call__(self, scope, receive, send) -> None:
        resp = self.resp
        relay = self.relay
        gone = False

        def left() -> None:
            nonlocal gone
            gone = True
            resp.close()  # drop the upstream socket: vLLM aborts the request

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            left()

        # Under the wrapper's own server the connection says when the client left; elsewhere a
        # task waits for http.disconnect.
        exchange = scope.get("extensions", {}).get("wrapper.exchange")
        watcher = None
        if exchange is not None:
            exchange.when_gone(left)
        else:
            watcher = asyncio.ensure_future(watch())
        self.metrics.streams.inc()
        try:
            await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
            try:
                async for chunk in resp.iter_chunks():
                    out = relay.transform(chunk)
                    if out:
                        await send({"type": "http.response.body", "body": out, "more_body": True})
                    if gone:
                        break
                tail = b""
            except (http1.UpstreamError, TimeoutError) as exc:
                if gone:
                    tail = b""
                else:
                    timeout = isinstance(exc, TimeoutError)
                    self.metrics.upstream_errors.labels("timeout" if timeout else "stream_broken").inc()
                    log.warning(
                        "upstream stream failed",
                        extra={"request_id": scope.get("state", {}).get("request_id"), "error": type(exc).__name__},
                    )
                    msg = (
                        "the model server went silent mid-stream (timeout)"
                        if timeout
                        else "the model server closed the stream before it finished"
                    )
                    tail = error_event(msg, 504 if timeout else 502, named=relay.named_error_events)
            if not gone:
                await send({"type": "http.response.body", "body": tail, "more_body": False})
        finally:
            if gone:  # logged and counted as 499 by the gateway
                scope.setdefault("state", {})["client_gone"] = True
            self.metrics.streams.dec()
            if watcher is not None:
                watcher.cancel()
            else:
                exchange.when_gone(None)
            resp.release()  # a stream read to its end keeps its connection for the next request
