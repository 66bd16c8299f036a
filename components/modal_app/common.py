"""Modal objects both architectures share: images, volumes, the secret, the vLLM function options."""

from __future__ import annotations

import atexit
import subprocess
from typing import Any

import modal
from components import wrapper_env
from components.modal_app.spec import HF_CACHE_DIR, VLLM_CACHE_DIR, AppSpec

# CUDA toolkit image vLLM's wheels (and flashinfer's JIT) run on; Python added by Modal. In step
# with the pinned wheel: vllm==0.32.0 from PyPI links libcudart.so.13 (torch 2.13, cutlass-dsl[cu13]),
# so the toolkit nvcc JIT-compiles with must be CUDA 13, not 12.x. Move both together.
CUDA_BASE_IMAGE = "nvidia/cuda:13.0.0-devel-ubuntu22.04"
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
                # huggingface_hub's Xet transfers with every core and more memory: faster first downloads.
                "HF_XET_HIGH_PERFORMANCE": "1",
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


# Seconds the one-off download may take: 70B in bf16 is ~140 GB.
DOWNLOAD_TIMEOUT = 3 * 3600
# What vLLM reads from a Hugging Face repository (not `original/*.pth`, Meta's duplicate checkpoint).
DOWNLOAD_PATTERNS = ("*.safetensors", "*.json", "*.model", "*.tiktoken", "*.txt", "*.jinja")


def download_options(spec: AppSpec) -> dict[str, Any]:
    """`@app.function(...)` keywords of `download_weights`: vLLM's image (for its huggingface_hub and
    HF_HOME on the Volume), the weights Volume, the secret (HF token), no GPU."""
    return dict(
        image=vllm_image(spec),
        volumes={HF_CACHE_DIR: volumes(spec)[HF_CACHE_DIR]},
        secrets=[secret(spec)],
        env=spec.function_env(),  # the container rebuilds the spec from it, as the GPU function does
        timeout=DOWNLOAD_TIMEOUT,
    )


def download_weights(spec: AppSpec) -> str:
    """Download the model at its revision into the Volume (Hugging Face's cache layout, which
    vLLM's own download then finds), and commit the Volume; the snapshot's path."""
    from huggingface_hub import snapshot_download  # type: ignore[import-not-found]  # in vLLM's image only

    path = snapshot_download(spec.model_id, revision=spec.model_revision, allow_patterns=list(DOWNLOAD_PATTERNS))
    volumes(spec)[HF_CACHE_DIR].commit()
    return str(path)


def start_vllm(spec: AppSpec) -> subprocess.Popen[bytes]:
    """Start vLLM's OpenAI server in the background; `@modal.web_server` waits for its port.

    When the container exits (scale-down, redeploy, `modal app stop`) vLLM gets SIGTERM and its
    shutdown timeout to finish streams and free the GPUs, instead of dying with the container."""
    # No secret on this command line: vLLM reads VLLM_API_KEY (from the Modal secret) itself.
    process = subprocess.Popen(spec.vllm_command())
    atexit.register(stop_process, process, spec.vllm_shutdown_seconds)
    return process


def stop_process(process: subprocess.Popen[bytes], grace_seconds: float) -> int:
    """SIGTERM, wait up to `grace_seconds`, then SIGKILL; the exit status."""
    if process.poll() is None:
        process.terminate()
        try:
            return process.wait(timeout=grace_seconds)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()
