"""One pure-ASGI middleware: request id, auth, body-size limit, metrics and the access log.

Pure ASGI (not ``BaseHTTPMiddleware``) because it sits on every request's hot path.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time

from collections.abc import Awaitable, Callable

import orjson
from starlette.responses import Response

from .auth import BearerAuth
from .errors import APIError, error_body
from .logs import AccessLog
from .metrics import Metrics
from .proxy import read_body

access_log = AccessLog()
log = logging.getLogger("wrapper")

_RID_OK = re.compile(rb"^[A-Za-z0-9._:\-]{1,128}$")


def _new_request_id() -> bytes:
    return os.urandom(12).hex().encode()


class GatewayMiddleware:
    def __init__(
        self,
        app,
        *,
        metrics: Metrics,
        auth: BearerAuth,
        max_body_bytes: int,
        fast_routes: dict[str, Callable[[bytes, str], Awaitable[Response]]] | None = None,
    ) -> None:
        self.app = app
        self.fast = fast_routes or {}
        self.metrics = metrics
        self.auth = auth
        self.max_body = max_body_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        rid = authorization = length = None
        for k, v in scope["headers"]:
            if k == b"x-request-id":
                rid = v
            elif k == b"authorization":
                authorization = v
            elif k == b"content-length":
                length = v
        if rid is None or not _RID_OK.match(rid):
            rid = _new_request_id()
        rid_s = rid.decode()
        scope.setdefault("state", {})["request_id"] = rid_s
        path: str = scope["path"]
        method: str = scope["method"]
        status = 500
        started = False

        async def send_(message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status = message["status"]
                started = True
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", rid)]
            await send(message)

        async def reply(exc: APIError) -> None:
            body = orjson.dumps(exc.body())
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            headers += [(k.lower().encode(), v.encode()) for k, v in exc.headers.items()]
            await send_({"type": "http.response.start", "status": exc.status, "headers": headers})
            await send_({"type": "http.response.body", "body": body})

        try:
            if not self.auth.allowed(path, authorization):
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
            elif method == "POST" and path in self.fast:
                # Hot path: the OpenAI pass-through routes skip FastAPI's routing and
                # dependency machinery (their schema is still declared on the FastAPI app).
                try:
                    raw = await read_body(receive, self.max_body)
                    response = await self._until_disconnect(self.fast[path](raw, rid_s), receive)
                except APIError as exc:
                    response = exc.response()
                if response is None:  # the client left: the upstream call was cancelled
                    status = 499
                    return
                await response(scope, receive, send_)
            else:
                await self.app(scope, self._limited(receive) if length is None else receive, send_)
        except Exception:  # a bug: answer in the OpenAI shape, never a stack trace to the client
            log.exception("unhandled error", extra={"request_id": rid_s, "path": path})
            if not started:
                await reply(APIError(500, "internal error in the wrapper", type="InternalServerError"))
        finally:
            elapsed = time.perf_counter() - start
            self.metrics.observe(path, method, status, elapsed)
            if access_log.enabled():
                access_log.write(rid_s, method, path, status, round(elapsed * 1000, 3))

    @staticmethod
    async def _until_disconnect(call: Awaitable[Response], receive) -> Response | None:
        """Await ``call``; if the client disconnects first, cancel it and return None.

        Cancelling drops the upstream connection, so vLLM aborts a non-streamed generation
        nobody will read (streams have their own watcher in ``UpstreamStream``).
        """
        task = asyncio.current_task()
        gone = False

        async def watch() -> None:
            nonlocal gone
            while (await receive())["type"] != "http.disconnect":
                pass
            gone = True
            task.cancel()

        watcher = asyncio.get_running_loop().create_task(watch())
        try:
            return await call
        except asyncio.CancelledError:
            if gone:
                task.uncancel()
                return None
            raise
        finally:
            watcher.cancel()

    def _too_large(self) -> APIError:
        return APIError(413, f"request body larger than {self.max_body} bytes", code="request_too_large")

    def _limited(self, receive):
        """For bodies without Content-Length (chunked): stop reading past the limit."""
        seen = 0
        limit = self.max_body

        async def receive_():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise self._too_large()
            return message

        return receive_


__all__ = ["GatewayMiddleware", "error_body"]
