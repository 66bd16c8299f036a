"""The wrapper as Modal's ASGI app (autoscale): runs inside the Modal wrapper container only.

`components/` never imports the wrapper on the deploying side; this module imports it by
name (`WRAPPER_FACTORY`) when the container starts, from the source the image ships.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from components.modal_app import WRAPPER_FACTORY, WRAPPER_PACKAGE
from components.modal_app.spec import AppSpec


def wrapper_environment(spec: AppSpec, vllm_url: str) -> dict[str, str]:
    """The non-secret VLLM_* settings of the wrapper; the keys come from the Modal secret."""
    return {**spec.wrapper_env, "VLLM_BASE_URL": vllm_url.rstrip("/") + "/v1"}


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


def build_wrapper_app(spec: AppSpec, vllm_url: str | None) -> Any:
    if not vllm_url:
        raise RuntimeError("the GPU function serve_vllm has no web URL; was the app deployed?")
    os.environ.update(wrapper_environment(spec, vllm_url))
    module_name, factory_name = WRAPPER_FACTORY.split(":")
    factory = getattr(importlib.import_module(module_name), factory_name)
    app = factory()
    version = getattr(importlib.import_module(WRAPPER_PACKAGE), "__version__", "unknown")

    async def info() -> dict[str, Any]:
        return service_info(spec, version)

    # The wrapper's own `/` describes a generic gateway; this deployment answers the old shape.
    app.add_api_route("/", info, methods=["GET"], tags=["service"], summary="Service information")
    app.router.routes.insert(0, app.router.routes.pop())
    return app
