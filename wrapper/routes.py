"""The HTTP routes."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from . import __version__
from .chat import ChatRelay, ChatRequest, ChatResponse, simple_answer, upstream_body
from .errors import APIError
from .keepalive import answer_stream
from .limits import Caps
from .metrics import Metrics
from .proxy import Proxy, upstream_error
from .routing.prefix import chat_key
from .routing.report import replica_report
from .settings import Settings
from .streaming import UpstreamStream
from .upstream import Upstream, read_and_close

_ERROR: dict[str, Any] = {
    "description": "OpenAI-style error",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    "error": {
                        "type": "object",
                        "properties": {
                            "message": {"type": "string"},
                            "type": {"type": "string"},
                            "param": {"type": ["string", "null"]},
                            "code": {"type": ["string", "integer", "null"]},
                        },
                    }
                },
            }
        }
    },
}
_ERRORS: dict[int | str, dict[str, Any]] = {s: _ERROR for s in (400, 401, 404, 408, 413, 429, 502, 503, 504)}

_MESSAGE = {
    "type": "object",
    "required": ["role", "content"],
    "properties": {
        "role": {"type": "string", "enum": ["system", "user", "assistant", "tool", "developer"]},
        "content": {"type": "string"},
    },
    "additionalProperties": True,
}
_SAMPLING = {
    "model": {"type": "string", "description": "defaults to VLLM_MODEL / the served model"},
    "max_tokens": {"type": "integer", "minimum": 1},
    "temperature": {"type": "number", "minimum": 0, "maximum": 2},
    "top_p": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
    "n": {"type": "integer", "minimum": 1},
    "seed": {"type": "integer"},
    "stop": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
    "stream": {"type": "boolean"},
    "stream_options": {"type": "object", "properties": {"include_usage": {"type": "boolean"}}},
}


def _body(schema: dict) -> dict:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _sampling(caps: Caps) -> dict:
    """The sampling fields, with the caps this wrapper enforces (``wrapper.limits``)."""
    out = dict(_SAMPLING)
    if caps.max_n is not None:
        out["n"] = {"type": "integer", "minimum": 1, "maximum": caps.max_n}
    if caps.max_tokens is not None:
        out["max_tokens"] = {"type": "integer", "minimum": 1, "maximum": caps.max_tokens}
    return out


def chat_completions_body(caps: Caps) -> dict:
    return _body(
        {
            "type": "object",
            "required": ["messages"],
            "properties": {
                "messages": {"type": "array", "items": _MESSAGE, "minItems": 1},
                **_sampling(caps),
                "tools": {"type": "array", "items": {"type": "object"}},
                "tool_choice": {},
                "response_format": {"type": "object"},
            },
            "additionalProperties": True,
        }
    )


def completions_body(caps: Caps) -> dict:
    return _body(
        {
            "type": "object",
            "required": ["prompt"],
            "properties": {
                "prompt": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
                **_sampling(caps),
                "echo": {"type": "boolean"},
            },
            "additionalProperties": True,
        }
    )


_SSE = {"text/event-stream": {"schema": {"type": "string"}}}


async def _served_by_the_gateway() -> Response:  # pragma: no cover - never reached
    raise RuntimeError("served by GatewayMiddleware's fast path")


def build_router(settings: Settings, upstream: Upstream, metrics: Metrics, proxy: Proxy) -> APIRouter:
    router = APIRouter()
    caps = Caps.from_settings(settings)
    # /chat's default never exceeds the cap on max_tokens (an explicit larger one is refused).
    default_max_tokens = min(settings.default_max_tokens, caps.max_tokens or settings.default_max_tokens)

    # The two pass-through routes are served by GatewayMiddleware's fast path (it never hands
    # them to FastAPI); they are declared here for the schema only.
    router.add_api_route(
        "/v1/chat/completions",
        _served_by_the_gateway,
        methods=["POST"],
        tags=["openai"],
        summary="OpenAI chat completions (pass-through, streamed or not)",
        openapi_extra=chat_completions_body(caps),
        responses={200: {"content": {"application/json": {}, **_SSE}}, **_ERRORS},
    )
    router.add_api_route(
        "/v1/completions",
        _served_by_the_gateway,
        methods=["POST"],
        tags=["openai"],
        summary="OpenAI completions (pass-through, streamed or not)",
        openapi_extra=completions_body(caps),
        responses={200: {"content": {"application/json": {}, **_SSE}}, **_ERRORS},
    )

    @router.get("/v1/models", tags=["openai"], summary="Models served", responses=_ERRORS)
    async def models(request: Request) -> Response:
        return await proxy.get(request, "/models")

    @router.get("/models", tags=["simple"], summary="Models served (same as /v1/models)", responses=_ERRORS)
    async def models_legacy(request: Request) -> Response:
        return await proxy.get(request, "/models")

    @router.post(
        "/chat",
        tags=["simple"],
        summary="Simple chat: JSON answer, or SSE text pieces when stream is true",
        response_model=ChatResponse,
        responses={200: {"content": _SSE}, **_ERRORS},
    )
    async def chat(body: ChatRequest, request: Request) -> Response:
        rid = request.scope["state"].get("request_id")
        model = body.model or await proxy.default_model()
        defaulted = body.max_tokens is None
        payload = upstream_body(body, model, default_max_tokens, settings.default_temperature)
        caps.check(payload, "messages")
        key = chat_key(payload["messages"], settings.routing_prefix_chars) if upstream.keyed else None

        async def answer() -> Response:
            for attempt in (0, 1):
                raw = orjson.dumps(payload)
                if body.stream:
                    resp = await upstream.open_stream("/chat/completions", raw, rid, key)
                    if resp.status == 200:
                        return UpstreamStream(resp, ChatRelay(metrics), metrics)
                    data = await read_and_close(resp)
                    status, retry_after = resp.status, resp.headers.get("Retry-After")
                else:
                    reply = await upstream.call("POST", "/chat/completions", raw, rid, key)
                    if reply.status == 200:
                        return Response(orjson.dumps(simple_answer(reply.body, metrics)), media_type="application/json")
                    status, data, retry_after = reply.status, reply.body, reply.retry_after
                # VLLM_DEFAULT_MAX_TOKENS may exceed what the model's context leaves: then let
                # the server use the remaining context instead of failing a request that set nothing.
                if attempt == 0 and defaulted and status == 400 and b"max_tokens" in data:
                    payload.pop("max_tokens", None)
                    continue
                break
            return upstream_error(status, data, retry_after)

        if body.stream:  # SSE headers and keep-alives while vLLM has not answered (wrapper/keepalive.py)
            after, every = settings.stream_keepalive_after, settings.stream_keepalive_interval
            return answer_stream(answer(), after, every, named_errors=True)
        return await answer()

    @router.get("/health", tags=["service"], summary="Wrapper and model-server health (never waits on vLLM)")
    async def health(request: Request) -> dict:
        scaler = getattr(request.app.state, "scaler", None)
        asleep = scaler is not None and scaler.state.value == "scaled_to_zero"
        ok = False if asleep else await upstream.available()
        model = settings.model or (upstream.known_model() if ok else None)
        out: dict[str, Any] = {
            "status": "healthy" if ok else "degraded",
            "vllm_available": ok,
            "model": model,
            # The internal URL only for key holders, when a key is configured.
            "base_url": settings.base if request.scope["state"].get("trusted", True) else None,
            "wrapper_status": "healthy",
            "vllm_status": "available" if ok else "unavailable",
        }
        if scaler is not None:  # scaled_to_zero | waking | ready (unknown until the first API read)
            out["scale_state"] = scaler.state.value
            out["idle_timeout"] = settings.idle_timeout
        autoscaler = getattr(request.app.state, "autoscaler", None)
        if autoscaler is not None:  # desired vs ready replicas, the signal, recent scale events
            out["autoscale"] = autoscaler.report()
        if upstream.keyed or len(upstream.router.pool.members) > 1 or upstream.router.discovery is not None:
            out["routing"] = upstream.router.policy.name
            out["replicas"] = replica_report(upstream.router)
        return out

    @router.get("/", tags=["service"], summary="Service information")
    async def info(request: Request) -> dict:
        trusted = request.scope["state"].get("trusted", True)
        return {
            "service": "vllm-wrapper",
            "version": __version__,
            "architecture": {
                "wrapper": "OpenAI-compatible gateway (no GPU)",
                "vllm": settings.base if trusted else "vLLM (OpenAI-compatible server)",
            },
            "model": settings.model or upstream.known_model(),
            "auth_required": settings.wrapper_api_key is not None,
            "endpoints": [
                "/chat",
                "/v1/chat/completions",
                "/v1/completions",
                "/v1/models",
                "/models",
                "/health",
                "/metrics",
                "/docs",
            ],
        }

    @router.get("/metrics", tags=["service"], summary="Prometheus metrics", response_class=Response)
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    return router


__all__ = ["APIError", "build_router"]
