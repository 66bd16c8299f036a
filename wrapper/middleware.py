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
from typing import Any, NamedTuple, Protocol

import orjson
from starlette.responses import Response

from .asgi_exchange import AsgiExchange, replay
from .auth import BearerAuth, is_open
from .errors import APIError, ClientGone, body_too_large, error_body
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


def _is_json(content_type: bytes | None) -> bool:
    if not content_type:
        return False
    media = content_type.partition(b";")[0].strip().lower()
    return media == b"application/json"


class Answer(NamedTuple):
    """A fast route's whole non-streamed answer: the gateway writes it as is, in one write.

    (A starlette ``Response`` is built to be sent through ASGI: its headers rendered into a list
    the gateway then filtered again, to write them itself.)
    """

    status: int
    content_type: bytes
    body: bytes


class Exchange(Protocol):
    """What the gateway needs of one request, whichever server carries it."""

    scope: dict[str, Any]
    rid: bytes
    status: int
    response_started: bool

    async def body(self, timeout: float) -> bytes: ...
    async def answer(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes | memoryview) -> None: ...
    async def stream(self, response: Any) -> None: ...
    async def call_app(self, app: Any, receive: Any = None) -> None: ...
    async def receive(self) -> dict[str, Any]: ...
    def when_gone(self, callback: Callable[[], None] | None) -> None: ...


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
        fast_routes: dict[str, Callable[[bytes, str], Awaitable[Response | Answer]]] | None = None,
    ) -> None:
        self.app = app
        self.fast = fast_routes or {}
        # The request targets the wrapper's own server serves in its fast lane (wrapper.fast_lane).
        self.fast_paths = {path.encode(): path for path in self.fast}
        self.metrics = metrics
        self.auth = auth
        self.max_body = max_body_bytes
        self.body_timeout = body_timeout
        self.limiter = limiter

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.serve(AsgiExchange(scope, receive, send, self.max_body))

    async def serve(self, ex: Exchange) -> None:
        """One request, from its head to its access-log line: ``ex`` is an :class:`AsgiExchange`
        or, under the wrapper's own server, a fast-lane ``FastExchange``."""
        start = time.perf_counter()
        scope = ex.scope
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
        ex.rid = rid
        rid_s = rid.decode()
        path: str = scope["path"]
        method: str = scope["method"]
        trusted = not self.auth.enabled or (n_auth == 1 and self.auth.check(authorization))
        state = scope.setdefault("state", {})
        state["request_id"] = rid_s
        state["trusted"] = trusted  # / and /health show internal details only to key holders
        try:
            refusal = self._refusal(n_auth, trusted, path, method, length, content_type)
            if refusal is not None:
                await _reply(ex, refusal)
            elif method == "POST" and path in JSON_ROUTES:
                try:
                    raw = await ex.body(self.body_timeout)
                except ClientGone:
                    ex.status = 499
                    return
                except APIError as exc:
                    await _reply(ex, exc)
                    return
                limiter = self.limiter
                if limiter is None:
                    await self._dispatch(ex, path, raw, rid_s)
                else:
                    who = limiter.caller(authorization, scope.get("client"))
                    try:
                        limiter.admit(who)
                    except APIError as exc:
                        await _reply(ex, exc)
                        return
                    charge = limiter.start_usage(raw)
                    try:
                        await self._dispatch(ex, path, raw, rid_s)
                    finally:
                        limiter.charge(who, charge)
                if state.get("client_gone"):
                    ex.status = 499
            else:
                await ex.call_app(self.app)
        except Exception:  # a bug: answer in the OpenAI shape, never a stack trace to the client
            log.exception("unhandled error", extra={"request_id": rid_s, "path": path})
            if not ex.response_started:
                await _reply(ex, APIError(500, "internal error in the wrapper", type="InternalServerError"))
        finally:
            elapsed = time.perf_counter() - start
            self.metrics.observe(path, method, ex.status, elapsed)
            if access_log.enabled():
                access_log.write(rid_s, method, path, ex.status, round(elapsed * 1000, 3))

    def _refusal(
        self,
        n_auth: int,
        trusted: bool,
        path: str,
        method: str,
        length: bytes | None,
        content_type: bytes | None,
    ) -> APIError | None:
        """The answer to a request refused on its head alone, in the order the checks apply."""
        if n_auth > 1:
            return APIError(
                400,
                "more than one Authorization header; send exactly one",
                param="Authorization",
                code="ambiguous_request",
            )
        if not trusted and not is_open(path):
            return APIError(
                401,
                "missing or invalid API key: send 'Authorization: Bearer <VLLM_WRAPPER_API_KEY>'",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return (
                body_too_large(self.max_body, close=False)
                if length.isdigit()
                else APIError(400, "invalid Content-Length")
            )
        if method == "POST" and path in JSON_ROUTES and not _is_json(content_type):
            got = content_type.decode("latin-1")[:100] if content_type else "none"
            return APIError(
                400,
                f"Content-Type must be application/json (got {got!r}); send the body as JSON",
                param="Content-Type",
                code="unsupported_media_type",
            )
        return None

    async def _dispatch(self, ex: Exchange, path: str, raw: bytes, rid: str) -> None:
        route = self.fast.get(path)
        if route is None:  # /chat: FastAPI validates the body we already read
            await ex.call_app(self.app, replay(raw, ex.receive))
            return
        # Hot path: the OpenAI pass-through routes skip FastAPI's routing and dependency
        # machinery (their schema is still declared on the FastAPI app). If the client leaves
        # first, the call is cancelled: that drops the upstream connection, so vLLM aborts a
        # non-streamed generation nobody will read (streams have their own watcher in
        # ``UpstreamStream``).
        task = asyncio.current_task()
        assert task is not None  # called from a request's task
        gone = False

        def left() -> None:
            nonlocal gone
            gone = True
            task.cancel()

        ex.when_gone(left)
        try:
            response = await route(raw, rid)
        except APIError as exc:
            response = exc.response()
        except asyncio.CancelledError:
            if not gone:
                raise
            task.uncancel()
            ex.scope["state"]["client_gone"] = True
            return
        finally:
            ex.when_gone(None)
        if type(response) is Answer:
            await ex.answer(response.status, [(b"content-type", response.content_type)], response.body)
            return
        if type(response) is Response:  # a plain answer: status, headers and body in one write
            headers = [h for h in response.raw_headers if h[0] != b"content-length"]
            await ex.answer(response.status_code, headers, response.body)
            return
        await ex.stream(response)


async def _reply(ex: Exchange, exc: APIError) -> None:
    headers = [(b"content-type", b"application/json")]
    headers += [(k.lower().encode(), v.encode()) for k, v in exc.headers.items()]
    await ex.answer(exc.status, headers, orjson.dumps(exc.body()))


__all__ = ["Answer", "Exchange", "GatewayMiddleware", "error_body"]
