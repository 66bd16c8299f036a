"""The wrapper as Modal's ASGI app (autoscale): runs inside the Modal wrapper container only.

`components/` never imports the wrapper on the deploying side; this module imports it by
name (`WRAPPER_FACTORY`) when the container starts, from the source the image ships.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import os
from collections.abc import Awaitable, Callable
from typing import Any

from components import wrapper_env
from components.modal_app import WRAPPER_FACTORY, WRAPPER_PACKAGE
from components.modal_app.spec import AppSpec


def wrapper_environment(spec: AppSpec, vllm_url: str) -> dict[str, str]:
    """The non-secret VLLM_* settings of the wrapper; the keys come from the Modal secret."""
    return {**spec.wrapper_env, wrapper_env.BASE_URL: vllm_url.rstrip("/") + "/v1"}


def service_info(spec: AppSpec, version: str) -> dict[str, Any]:
    """`GET /` as the old autoscale deployment answered it."""
    return {
        "service": spec.app_name,
        "version": version,
        "architecture": {
            "wrapper": "Always-on (no GPU)",
            "vllm": "Auto-scale to zero (with GPU)",
            "scaledown_window": spec.idle_description,
        },
        "model": spec.served_model_name,
    }


# How many GPU containers run now (Modal's live stats); None when it cannot be told.
GpuRunners = Callable[[], Awaitable[int | None]]


def build_wrapper_app(spec: AppSpec, vllm_url: str | None, gpu_runners: GpuRunners | None = None) -> Any:
    if not vllm_url:
        raise RuntimeError("the GPU function serve_vllm has no web URL; was the app deployed?")
    os.environ.update(wrapper_environment(spec, vllm_url))
    module_name, factory_name = WRAPPER_FACTORY.split(":")
    factory = getattr(importlib.import_module(module_name), factory_name)
    gateway = factory()
    # create_app() returns the wrapper's ASGI gateway; its routes live on the FastAPI app inside.
    app = getattr(gateway, "app", gateway)
    version = getattr(importlib.import_module(WRAPPER_PACKAGE), "__version__", "unknown")

    async def info() -> dict[str, Any]:
        return service_info(spec, version)

    # The wrapper's own `/` describes a generic gateway; this deployment answers the old shape.
    _override(app, "/", info, "Service information")
    wrapper_health = _endpoint(app.router.routes, "/health")
    if gpu_runners is not None and wrapper_health is not None:
        health = _health_without_waking(spec, wrapper_health, gpu_runners)
        _override(app, "/health", health, "Wrapper and model-server health")
    return gateway


def _endpoint(routes: list[Any], path: str) -> Callable[[], Awaitable[Any]] | None:
    """The wrapper's own endpoint for `path`, looking into included routers."""
    for route in routes:
        if getattr(route, "path", None) == path and hasattr(route, "endpoint"):
            return route.endpoint
        inner = getattr(route, "routes", None) or getattr(getattr(route, "original_router", None), "routes", None)
        if inner and (found := _endpoint(inner, path)):
            return found
    return None


def _override(app: Any, path: str, endpoint: Callable[[], Awaitable[Any]], summary: str) -> None:
    app.add_api_route(path, endpoint, methods=["GET"], tags=["service"], summary=summary)
    app.router.routes.insert(0, app.router.routes.pop())  # ahead of the wrapper's own route


def _health_without_waking(
    spec: AppSpec, wrapper_health: Callable[..., Awaitable[Any]], gpu_runners: GpuRunners
) -> Callable[..., Awaitable[Any]]:
    """Probing vLLM through Modal would start a GPU container: a monitor polling /health would
    keep the GPU up for ever. So vLLM is probed only while Modal says a GPU container runs; at
    zero, or when the stats call fails or is refused, answer without probing, in the shape the
    wrapper itself uses when its scaler says `scaled_to_zero`."""
    from starlette.requests import Request

    takes_request = bool(inspect.signature(wrapper_health).parameters)

    def unprobed(scale_state: str) -> dict[str, Any]:
        return {
            "status": "degraded",
            "vllm_available": False,
            "model": spec.served_model_name,
            "base_url": os.environ.get(wrapper_env.BASE_URL),
            "wrapper_status": "healthy",
            "vllm_status": "unavailable" if scale_state == "scaled_to_zero" else "unknown",
            "scale_state": scale_state,
            "idle_timeout": spec.scaledown_window,
        }

    async def health(request: Request) -> Any:
        try:
            runners = await asyncio.wait_for(gpu_runners(), timeout=3)
        except Exception:  # stats refused or slow: never fall back to a probe that could wake the GPU
            return unprobed("unknown")
        if not runners:
            return unprobed("scaled_to_zero")
        return await (wrapper_health(request) if takes_request else wrapper_health())

    health.__annotations__ = {"request": Request}  # resolved for FastAPI (starlette is imported lazily)
    return health
