"""The application factory."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response

from . import __version__
from .auth import BearerAuth
from .docs import add_docs
from .errors import APIError
from .limits import RateLimiter
from .metrics import Metrics
from .middleware import GatewayMiddleware
from .proxy import Proxy
from .routes import build_router
from .routing.metrics import RouterCollector
from .settings import Settings, load_settings
from .upstream import Upstream


def _param(loc: tuple) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or None


def create_app(settings: Settings | None = None) -> GatewayMiddleware:
    """The ASGI application: :class:`GatewayMiddleware` around the FastAPI app (``.app``).

    The gateway sits *outside* FastAPI's own middleware stack, so the hot pass-through routes
    pay for none of it.
    """
    settings = settings or load_settings()
    upstream = Upstream(settings)
    metrics = Metrics()
    metrics.registry.register(RouterCollector(upstream.router))
    scaler = None
    if settings.idle_timeout > 0:  # scale-to-zero on Kubernetes; imported only when configured
        from .scaling import build_scaler

        def busy() -> bool:  # a long stream counts as activity until it ends
            return (metrics.registry.get_sample_value("vllm_wrapper_streams_in_flight") or 0) > 0

        scaler = build_scaler(settings, metrics.registry, probe=upstream.probe, busy=busy)
        upstream.gate = scaler.admit
    autoscaler = None
    if settings.autoscale_max > 0:  # min..max replicas on vLLM's own load; imported only when configured
        from .scaling import build_autoscaler

        autoscaler = build_autoscaler(settings, upstream.router, metrics.registry)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await upstream.start()
        if scaler is not None:
            await scaler.start()
        if autoscaler is not None:
            await autoscaler.start()
        try:
            yield
        finally:
            if autoscaler is not None:
                await autoscaler.stop()
            if scaler is not None:
                await scaler.stop()
            await upstream.close()

    app = FastAPI(
        title="vLLM wrapper",
        version=__version__,
        description="OpenAI-compatible gateway in front of vLLM. Errors are OpenAI-shaped.",
        lifespan=lifespan,
        docs_url=None,  # served by add_docs, from local files
        redoc_url=None,  # ReDoc would need a CDN; /docs covers it
    )
    add_docs(app)
    app.state.settings = settings
    app.state.upstream = upstream
    app.state.metrics = metrics
    app.state.scaler = scaler
    app.state.autoscaler = autoscaler
    proxy = Proxy(settings, upstream, metrics)
    app.include_router(build_router(settings, upstream, metrics, proxy))

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> Response:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        first = errors[0] if errors else {}
        param = _param(tuple(first.get("loc", ())))
        msg = str(first.get("msg", "invalid request"))
        if first.get("type") == "json_invalid":
            msg, param = "request body is not valid JSON", None
        elif param:
            msg = f"{param}: {msg}"
        return APIError(400, msg, param=param).response()

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> Response:
        # Starlette re-raises after this answer; the gateway logs it.
        return APIError(500, "internal error in the wrapper").response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        return APIError(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None)).response()

    return GatewayMiddleware(
        app,
        metrics=metrics,
        auth=BearerAuth(settings.wrapper_api_key),
        max_body_bytes=settings.max_body_bytes,
        body_timeout=settings.body_timeout,
        limiter=RateLimiter.from_settings(settings),
        fast_routes={
            "/v1/chat/completions": proxy.chat_completions,
            "/v1/completions": proxy.completions,
        },
    )
