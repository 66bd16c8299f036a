"""Modal objects both architectures share: images, volumes, the secret, the vLLM function options."""

from __future__ import annotations

from typing import Any

import modal

from components import wrapper_env
from components.modal_app.spec import HF_CACHE_DIR, VLLM_CACHE_DIR, AppSpec

# CUDA toolkit image vLLM's wheels (and flashinfer's JIT) run on; Python added by Modal.
CUDA_BASE_IMAGE = "nvidia/cuda:12.8.0-devel-ubuntu22.04"
GPU_PYTHON = "3.12"
WRAPPER_PYTHON = "3.11"


def vllm_image(spec: AppSpec) -> modal.Image:
    """vLLM pinned to the same release as the Kubernetes image; weights live in a Volume, not here."""
    return (
        modal.Image.from_registry(CUDA_BASE_IMAGE, add_python=GPU_PYTHON)
        .entrypoint([])
        .uv_pip_install(f"vllm=={spec.vllm_version}")
        .env(
            {
                "HF_HOME": HF_CACHE_DIR,
                "VLLM_CACHE_ROOT": VLLM_CACHE_DIR,
                "VLLM_NO_USAGE_STATS": "1",
                "DO_NOT_TRACK": "1",
            }
        )
    )


def wrapper_image(spec: AppSpec, wrapper_package: str) -> modal.Image:
    """A small CPU image: the wrapper's pinned requirements, and the wrapper package's own source."""
    return (
        modal.Image.debian_slim(python_version=WRAPPER_PYTHON)
        .uv_pip_install(*spec.wrapper_requirements)
        .env({wrapper_env.WRAPPER_PORT: "8001", wrapper_env.LOG_LEVEL: "INFO"})
        # The same files as in the repository, added at container start (no copy in the image).
        .add_local_python_source(wrapper_package)
    )


def volumes(spec: AppSpec) -> dict[str, modal.Volume]:
    """Weights and vLLM's compile cache survive cold starts: a cold start does not download again."""
    return {
        HF_CACHE_DIR: modal.Volume.from_name(spec.hf_cache_volume, create_if_missing=True),
        VLLM_CACHE_DIR: modal.Volume.from_name(spec.vllm_cache_volume, create_if_missing=True),
    }


def secret(spec: AppSpec) -> modal.Secret:
    """The named secret `pulumi up` writes (HF token, vLLM key, wrapper key); looked up at deploy."""
    return modal.Secret.from_name(spec.secret_name)


def vllm_function_options(spec: AppSpec) -> dict[str, Any]:
    """`@app.function(...)` keywords of the GPU function running vLLM."""
    options: dict[str, Any] = dict(
        image=vllm_image(spec),
        gpu=spec.gpu,
        volumes=volumes(spec),
        secrets=[secret(spec)],
        env=spec.function_env(),
        timeout=spec.function_timeout,
        startup_timeout=spec.startup_timeout,
        min_containers=spec.min_containers,
        max_containers=spec.max_containers,
    )
    if spec.scaledown_window is not None:
        options["scaledown_window"] = spec.scaledown_window
    return options


def start_vllm(spec: AppSpec) -> None:
    """Start vLLM's OpenAI server in the background; `@modal.web_server` waits for its port."""
    import subprocess

    # No secret on this command line: vLLM reads VLLM_API_KEY (from the Modal secret) itself.
    subprocess.Popen(spec.vllm_command())
