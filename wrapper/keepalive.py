"""Streamed requests whose model server has not answered yet: SSE headers early, then keep-alives.

A proxy in front of the wrapper may give up on a request that has not started its response:
Modal's web proxy answers a web request still running after 150 s with a 303 to a result URL
(https://modal.com/docs/guide/webhook-timeouts), and ingress controllers have read timeouts.
A cold start (a scaled-to-zero vLLM waking, Modal starting a GPU container) takes minutes.

So a streamed request (``stream: true`` on ``/v1/chat/completions``, ``/v1/completions``,
``/chat``) whose upstream has not answered within ``VLLM_STREAM_KEEPALIVE_AFTER`` seconds gets
the SSE response headers at once and then an SSE comment, ``: keep-alive``, every
``VLLM_STREAM_KEEPALIVE_INTERVAL`` seconds until vLLM answers. SSE clients ignore comments
(https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation).
vLLM's stream then follows unchanged. An error after the headers went out (vLLM refused the
request, never answered, or the wrapper gave up) can no longer be an HTTP status: it becomes
one OpenAI-style error event, ``data: {"error": {...}}`` (``event: error`` first on ``/chat``).

A stream that answers within the delay is sent exactly as without this module: no early
headers, no comment.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import orjson
from starlette.responses import Response

from .errors import APIError, normalize_error
from .streaming import SSE_HEADERS, UpstreamStream

KEEPALIVE = b": keep-alive\n\n"


async def answer_stream(
    opening: Coroutine[Any, Any, Response], after: float, interval: float, *, named_errors: bool
) -> Response:
    """The response of ``opening`` (which opens the upstream stream), or, if it is still running
    after ``after`` seconds, a response that sends the SSE headers now and keep-alives meanwhile.

    ``after <= 0`` turns this off: ``opening`` is awaited as it is.
    """
    if after <= 0:
        return await opening
    loop = asyncio.get_running_loop()
    task = loop.create_task(opening)
    # A future, a timer and a done callback: cheaper than asyncio.wait on the hot path.
    waited: asyncio.Future[None] = loop.create_future()

    def wake(_: object = None) -> None:
        if not waited.done():
            waited.set_result(None)

    timer = loop.call_later(after, wake)
    task.add_done_callback(wake)
    try:
        await waited
    except asyncio.CancelledError:  # the client left (the gateway cancels the request)
        task.cancel()
        raise
    finally:
        timer.cancel()
    if task.done():
        return task.result()
    return KeepAliveStream(task, interval, named_errors=named_errors)


class KeepAliveStream(Response):
    """SSE headers now, ``: keep-alive`` every ``interval`` s, then the stream ``task`` opens."""

    def __init__(self, task: asyncio.Task[Response], interval: float, *, named_errors: bool) -> None:
        self.task = task
        self.interval = interval
        self.named_errors = named_errors
        self.status_code = 200
        self.background = None

    async def __call__(self, scope, receive, send) -> None:
        task = self.task
        loop = asyncio.get_running_loop()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        watcher = loop.create_task(watch())
        try:
            await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
            while True:
                done, _ = await asyncio.wait((task, watcher), timeout=self.interval, return_when="FIRST_COMPLETED")
                if watcher in done:  # the client left while vLLM was starting
                    scope.setdefault("state", {})["client_gone"] = True
                    return
                if task in done:
                    break
                await send({"type": "http.response.body", "body": KEEPALIVE, "more_body": True})
            watcher.cancel()  # the stream below watches the client itself
            try:
                response = task.result()
            except APIError as exc:
                response = exc.response()
            if isinstance(response, UpstreamStream):
                await response(scope, receive, _body_only(send))
                return
            status, body = await _rendered(response, scope, receive)
            await send({"type": "http.response.body", "body": self.error_event(status, body), "more_body": False})
        finally:
            watcher.cancel()
            if not task.done():
                task.cancel()
            elif not task.cancelled() and task.exception() is None:
                result = task.result()
                if isinstance(result, UpstreamStream):
                    result.resp.close()  # idempotent; releases the socket if the stream never ran

    def error_event(self, status: int, body: bytes) -> bytes:
        """The error answer the client would have had, as one SSE event (the OpenAI shape)."""
        data = orjson.dumps(orjson.loads(normalize_error(status, body)))  # one line, whatever vLLM sent
        return (b"event: error\n" if self.named_errors else b"") + b"data: " + data + b"\n\n"


def _body_only(send):
    """``send`` minus ``http.response.start``: the headers already went out."""

    async def send_(message) -> None:
        if message["type"] != "http.response.start":
            await send(message)

    return send_


async def _rendered(response: Response, scope, receive) -> tuple[int, bytes]:
    """Run a (small, non-streamed) response into memory: its status and body."""
    status = response.status_code
    parts: list[bytes] = []

    async def capture(message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            parts.append(message.get("body", b""))

    await response(scope, receive, capture)
    return status, b"".join(parts)
