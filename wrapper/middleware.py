"""One pure-ASGI middleware: request id, auth, body limits and rate limits, metrics, the access log.

Pure ASGI (not ``BaseHTTPMiddleware``) because it sits on every request's hot path.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable

import orjson
from starlette.responses import Response

from .auth import BearerAuth, is_open
from .errors import APIError, error_body
from .limits import RateLimiter
from .logs import AccessLog
from .metrics import Metrics

access_log = AccessLog()
log = logging.getLogger("wrapper")

_RID_OK = re.compile(rb"^[A-Za-z0-9._:\-]{1,128}$")


def _new_request_id() -> bytes:
    # An id to find a request's lines by, not a secret: no system call per request.
    return b"%024x" % random.getrandbits(96)


# POST routes whose body is JSON: read here (size limit, VLLM_BODY_TIMEOUT) before dispatch.
JSON_ROUTES = frozenset({"/chat", "/v1/chat/completions", "/v1/completions"})


class ClientGone(Exception):
    """The client disconnected before its request body arrived."""


def _is_json(content_type: bytes | None) -> bool:
    if not content_type:
        return False
    media = content_type.partition(b";")[0].strip().lower()
    return media == b"application/json"


class GatewayMiddleware:
    def __init__(
        self,
        app,
        *,
        metrics: Metrics,
        auth: BearerAuth,
        max_body_bytes: int,
        body_timeout: float = 60.0,
        limiter: RateLimiter | None = None,
        fast_routes: dict[str, Callable[[bytes, str], Awaitable[Response]]] | None = None,
    ) -> None:
        self.app = app
        self.fast = fast_routes or {}
        self.metrics = metrics
        self.auth = auth
        self.max_body = max_body_bytes
        self.body_timeout = body_timeout
        self.limiter = limiter

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        rid = authorization = length = content_type = None
        n_auth = 0
        for k, v in scope["headers"]:
            if k == b"x-request-id":
                rid = v
            elif k == b"authorization":
                authorization = v
                n_auth += 1
            elif k == b"content-length":
                length = v
            elif k == b"content-type":
                content_type = v
        if rid is None or not _RID_OK.match(rid):
            rid = _new_request_id()
        rid_s = rid.decode()
        path: str = scope["path"]
        method: str = scope["method"]
        trusted = not self.auth.enabled or (n_auth == 1 and self.auth.check(authorization))
        state = scope.setdefault("state", {})
        state["request_id"] = rid_s
        state["trusted"] = trusted  # / and /health show internal details only to key holders
        status = 500
        started = False

        async def send_(message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status = message["status"]
                started = True
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", rid)]
            await send(message)

        exchange = scope.get("extensions", {}).get("wrapper.exchange")

        async def respond(code: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
            """A whole fixed-length response (``headers`` without content-length)."""
            nonlocal status, started
            if exchange is not None:  # one write, no ASGI messages (wrapper/server.py)
                status, started = code, True
                headers.append((b"x-request-id", rid))
                exchange.respond(code, headers, body)
                return
            headers.append((b"content-length", b"%d" % len(body)))
            await send_({"type": "http.response.start", "status": code, "headers": headers})
            await send_({"type": "http.response.body", "body": body})

        async def reply(exc: APIError) -> None:
            headers = [(b"content-type", b"application/json")]
            headers += [(k.lower().encode(), v.encode()) for k, v in exc.headers.items()]
            await respond(exc.status, headers, orjson.dumps(exc.body()))

        try:
            if n_auth > 1:
                await reply(
                    APIError(
                        400,
                        "more than one Authorization header; send exactly one",
                        param="Authorization",
                        code="ambiguous_request",
                    )
                )
            elif not trusted and not is_open(path):
                await reply(
                    APIError(
                        401,
                        "missing or invalid API key: send 'Authorization: Bearer <VLLM_WRAPPER_API_KEY>'",
                        code="invalid_api_key",
                        headers={"WWW-Authenticate": "Bearer"},
                    )
                )
            elif length is not None and (not length.isdigit() or int(length) > self.max_body):
                await reply(self._too_large() if length.isdigit() else APIError(400, "invalid Content-Length"))
            elif method == "POST" and path in JSON_ROUTES:
                if not _is_json(content_type):
                    got = content_type.decode("latin-1")[:100] if content_type else "none"
                    await reply(
                        APIError(
                            400,
                            f"Content-Type must be application/json (got {got!r}); send the body as JSON",
                            param="Content-Type",
                            code="unsupported_media_type",
                        )
                    )
                    return
                try:
                    raw = await self._read_body(receive)
                except ClientGone:
                    status = 499
                    return
                except APIError as exc:
                    await reply(exc)
                    return
                limiter = self.limiter
                if limiter is None:
                    await self._dispatch(scope, receive, send_, respond, exchange, path, raw, rid_s)
                else:
                    who = limiter.caller(authorization, scope.get("client"))
                    try:
                        limiter.admit(who)
                    except APIError as exc:
                        await reply(exc)
                        return
                    charge = limiter.start_usage(raw)
                    try:
                        await self._dispatch(scope, receive, send_, respond, exchange, path, raw, rid_s)
                    finally:
                        limiter.charge(who, charge)
                if state.get("client_gone"):
                    status = 499
            else:
                await self.app(scope, receive, send_)
        except Exception:  # a bug: answer in the OpenAI shape, never a stack trace to the client
            log.exception("unhandled error", extra={"request_id": rid_s, "path": path})
            if not started:
                await reply(APIError(500, "internal error in the wrapper", type="InternalServerError"))
        finally:
            elapsed = time.perf_counter() - start
            self.metrics.observe(path, method, status, elapsed)
            if access_log.enabled():
                access_log.write(rid_s, method, path, status, round(elapsed * 1000, 3))

    async def _dispatch(self, scope, receive, send, respond, exchange, path: str, raw: bytes, rid: str) -> None:
        route = self.fast.get(path)
        if route is None:  # /chat: FastAPI validates the body we already read
            await self.app(scope, _replay(raw, receive), send)
            return
        # Hot path: the OpenAI pass-through routes skip FastAPI's routing and dependency
        # machinery (their schema is still declared on the FastAPI app).
        try:
            response = await self._until_disconnect(route(raw, rid), receive, exchange)
        except APIError as exc:
            response = exc.response()
        if response is None:  # the client left: the upstream call was cancelled
            scope["state"]["client_gone"] = True
            return
        if type(response) is Response:  # a plain answer: status, headers and body in one write
            headers = [h for h in response.raw_headers if h[0] != b"content-length"]
            await respond(response.status_code, headers, response.body)
            return
        await response(scope, receive, send)

    async def _read_body(self, receive) -> bytes:
        """The whole body, within ``VLLM_MAX_BODY_BYTES`` (413) and ``VLLM_BODY_TIMEOUT`` (408)."""
        try:
            async with asyncio.timeout(self.body_timeout):
                return await read_body(receive, self.max_body)
        except TimeoutError:
            raise APIError(
                408,
                f"request body not received within {self.body_timeout:g} s",
                code="request_timeout",
                headers={"Connection": "close"},
            ) from None

    @staticmethod
    async def _until_disconnect(call: Awaitable[Response], receive, exchange=None) -> Response | None:
        """Await ``call``; if the client disconnects first, cancel it and return None.

        Cancelling drops the upstream connection, so vLLM aborts a non-streamed generation
        nobody will read (streams have their own watcher in ``UpstreamStream``). Under the
        wrapper's own server the connection says when the client left (``Exchange.when_gone``);
        elsewhere a second task waits for ``http.disconnect``.
        """
        task = asyncio.current_task()
        assert task is not None  # called from a request's task
        gone = False

        def left() -> None:
            nonlocal gone
            gone = True
            task.cancel()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            left()

        watcher = None
        if exchange is not None:
            exchange.when_gone(left)
        else:
            watcher = asyncio.get_running_loop().create_task(watch())
        try:
            return await call
        except asyncio.CancelledError:
            if gone:
                task.uncancel()
                return None
            raise
        finally:
            if watcher is not None:
                watcher.cancel()
            else:
                exchange.when_gone(None)

    def _too_large(self) -> APIError:
        return APIError(413, f"request body larger than {self.max_body} bytes", code="request_too_large")


def _replay(body: bytes, receive):
    """A ``receive`` that gives the body already read, then the client's own messages."""
    sent = False

    async def receive_():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return receive_


async def read_body(receive, limit: int) -> bytes:
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
                raise APIError(
                    413,
                    f"request body larger than {limit} bytes",
                    code="request_too_large",
                    headers={"Connection": "close"},
                )
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


__all__ = ["GatewayMiddleware", "error_body", "read_body"]
