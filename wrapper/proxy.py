"""Pass-through of OpenAI requests: a cheap parse of the body, then bytes in and bytes out."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from .errors import APIError, normalize_error
from .keepalive import answer_stream
from .limits import Caps
from .metrics import Metrics
from .middleware import Answer
from .routing.prefix import chat_key, completion_key
from .settings import Settings
from .streaming import Relay, UpstreamStream
from .upstream import DEFAULT_RETRY_AFTER, Upstream, read_and_close


def parse_object(raw: bytes) -> dict:
    if not raw:
        raise APIError(400, "request body is empty; send a JSON object")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise APIError(400, f"request body is not valid JSON: {exc.msg}") from None
    if not isinstance(obj, dict):
        raise APIError(400, "request body must be a JSON object")
    return obj


def upstream_error(status: int, body: bytes, retry_after: str | None = None) -> Response:
    """Turn a non-2xx upstream reply into the client's answer (OpenAI-shaped)."""
    if status in (401, 403):
        # The backend refused *our* key: a gateway misconfiguration, not the client's fault.
        raise APIError(
            502,
            "the model server rejected the wrapper's credentials (check VLLM_API_KEY)",
            code="upstream_auth_failed",
        )
    if status == 503:
        raise APIError(
            503,
            "the model server is unavailable or still loading, retry later",
            headers={"Retry-After": retry_after or DEFAULT_RETRY_AFTER},
        )
    return Response(normalize_error(status, body), status_code=status, media_type="application/json")


def _content_type(media_type: str) -> bytes:
    """The Content-Type starlette's ``Response(media_type=...)`` would send (text gets a charset)."""
    if media_type.startswith("text/") and "charset=" not in media_type.lower():
        media_type += "; charset=utf-8"
    return media_type.encode("latin-1")


class Proxy:
    def __init__(self, settings: Settings, upstream: Upstream, metrics: Metrics) -> None:
        self.settings = settings
        self.upstream = upstream
        self.metrics = metrics
        self.caps = Caps.from_settings(settings)
        self.keepalive = (settings.stream_keepalive_after, settings.stream_keepalive_interval)

    async def default_model(self) -> str | None:
        return self.settings.model or await self.upstream.served_model()

    # Plain functions handing back forward()'s coroutine: one coroutine less per request.
    def chat_completions(self, raw: bytes, rid: str | None) -> Coroutine[Any, Any, Response | Answer]:
        return self.forward(raw, rid, "chat/completions", "messages")

    def completions(self, raw: bytes, rid: str | None) -> Coroutine[Any, Any, Response | Answer]:
        return self.forward(raw, rid, "completions", "prompt")

    async def forward(self, raw: bytes, rid: str | None, path: str, required: str) -> Response | Answer:
        """``POST /v1/<path>``: forward the body as is (adding ``model`` when absent)."""
        obj = parse_object(raw)
        if required not in obj:
            raise APIError(400, f"'{required}' is required", param=required)
        if required == "messages" and (not isinstance(obj["messages"], list) or not obj["messages"]):
            raise APIError(400, "'messages' must be a non-empty array", param="messages")
        self.caps.check(obj, required)
        stream = obj.get("stream")
        if stream is not None and not isinstance(stream, bool):
            raise APIError(400, "'stream' must be a boolean", param="stream")
        model = obj.get("model")
        if model is None:
            default = await self.default_model()
            if default is not None:
                if "model" in obj:  # explicit null: re-encode
                    obj["model"] = default
                    raw = orjson.dumps(obj)
                else:  # splice it in, no re-encoding of the rest
                    i = raw.index(b"{") + 1
                    raw = b'{"model":' + orjson.dumps(default) + (b"," if obj else b"") + raw[i:]
        elif not isinstance(model, str):
            raise APIError(400, "'model' must be a string", param="model")
        route = "/v1/" + path
        key = None
        if self.upstream.keyed:  # several replicas: route by the prompt's leading prefix
            limit = self.settings.routing_prefix_chars
            key = chat_key(obj["messages"], limit) if required == "messages" else completion_key(obj["prompt"], limit)
        if stream:
            opening = self._open_stream(path, raw, rid, key, route)
            return answer_stream(opening, *self.keepalive, named_errors=False)
        reply = await self.upstream.call("POST", "/" + path, raw, rid, key)
        if reply.status >= 400:
            return upstream_error(reply.status, reply.body, reply.retry_after)
        if b'"usage"' in reply.body:
            try:
                self.metrics.count_usage(route, orjson.loads(reply.body).get("usage"))
            except (orjson.JSONDecodeError, AttributeError):
                pass
        return Answer(reply.status, _content_type(reply.content_type), reply.body)

    async def _open_stream(self, path: str, raw: bytes, rid: str | None, key: int | None, route: str) -> Response:
        resp = await self.upstream.open_stream("/" + path, raw, rid, key)
        if resp.status != 200:
            data = await read_and_close(resp)
            return upstream_error(resp.status, data, resp.headers.get("Retry-After"))
        return UpstreamStream(resp, Relay(self.metrics, route), self.metrics)

    async def get(self, request: Request, path: str) -> Response:
        rid = request.scope["state"].get("request_id")
        reply = await self.upstream.call("GET", path, None, rid)
        if reply.status >= 400:
            return upstream_error(reply.status, reply.body, reply.retry_after)
        return Response(reply.body, status_code=reply.status, media_type=reply.content_type)
