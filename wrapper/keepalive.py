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


def answer_stream(
    opening: Coroutine[Any, Any, Response], after: float, interval: float, *, named_errors: bool
) -> Response:
    """A response that runs ``opening`` (which opens the upstream stream and returns the response
    to send) and, if it is still running after ``after`` seconds, sends the SSE headers and
    keep-alives meanwhile. ``after <= 0`` turns the early headers off."""
    return KeepAliveStream(opening, after, interval, named_errors=named_errors)


class KeepAliveStream(Response):
    """Runs ``opening`` in the request's own task with one timer armed: the fast case costs a
    timer, not a task. Only when the timer fires does a second task send the headers and the
    comments, and watch for the client leaving (it then cancels the request's task)."""

    def __init__(
        self, opening: Coroutine[Any, Any, Response], after: float, interval: float, *, named_errors: bool
    ) -> None:
        self.opening = opening
        self.after = after
        self.interval = interval
        self.named_errors = named_errors
        self.status_code = 200
        self.background = None

    async def __call__(self, scope, receive, send) -> None:
        loop = asyncio.get_running_loop()
        request_task = asyncio.current_task()
        assert request_task is not None
        early: asyncio.Task[None] | None = None
        gone = False

        async def keep_alive() -> None:
            nonlocal gone
            await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
            while True:
                try:
                    async with asyncio.timeout(self.interval):
                        while (await receive())["type"] != "http.disconnect":
                            pass
                except TimeoutError:
                    await send({"type": "http.response.body", "body": KEEPALIVE, "more_body": True})
                    continue
                gone = True  # the client left while vLLM was starting: stop waiting for it
                request_task.cancel()
                return

        def go_early() -> None:
            nonlocal early
            early = loop.create_task(keep_alive())

        timer = loop.call_later(self.after, go_early) if self.after > 0 else None
        response: Response | None = None
        try:
            try:
                response = await self.opening
            except APIError as exc:
                response = exc.response()
            finally:
                if timer is not None:
                    timer.cancel()
                if early is not None and not early.done():
                    early.cancel()
                    await asyncio.wait((early,))  # never two senders at once
        except asyncio.CancelledError:
            if isinstance(response, UpstreamStream):  # opened just as the client left
                response.resp.close()
            if gone:
                request_task.uncancel()
                scope.setdefault("state", {})["client_gone"] = True
                return
            raise
        if early is None:  # vLLM answered in time: exactly the response of old
            await response(scope, receive, send)
            return
        if isinstance(response, UpstreamStream):
            await response(scope, receive, _body_only(send))
            return
        status, body = await _rendered(response, scope, receive)
        await send({"type": "http.response.body", "body": self.error_event(status, body), "more_body": False})

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
