"""What the project knows about GPUs and models, as plain data.

The fit check, the Kubernetes node selectors, the Modal GPU limits and the chart's generated GPU
table read these tables; nothing here talks to a network. Standard library only: the Modal
containers import it. A model that is not listed can still be deployed: the stack
gives ``model.parametersBillion`` and the shape-based estimates fall back to
conservative defaults.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

GIB = 1024**3


@dataclass(frozen=True)
class Gpu:
    name: str  # the name a stack uses, and Modal's GPU string
    memory_gib: float  # what nvidia-smi reports (MiB / 1024), not the marketing GB
    # The label NVIDIA's GPU feature discovery puts on nodes (`nvidia.com/gpu.product`).
    node_product: str
    # The most of this GPU Modal attaches to one container (`A100-80GB:8`).
    modal_max_count: int = 8


GPUS: dict[str, Gpu] = {
    gpu.name: gpu
    for gpu in (
        Gpu("A100-80GB", 80, "NVIDIA-A100-SXM4-80GB"),
        Gpu("A100-40GB", 40, "NVIDIA-A100-SXM4-40GB"),
        Gpu("H100", 79.6, "NVIDIA-H100-80GB-HBM3"),
        Gpu("H200", 140.4, "NVIDIA-H200"),
        Gpu("B200", 179.1, "NVIDIA-B200"),
        Gpu("L40S", 45.0, "NVIDIA-L40S"),
        Gpu("A10G", 22.5, "NVIDIA-A10G", modal_max_count=4),
        Gpu("L4", 22.5, "NVIDIA-L4"),
        Gpu("T4", 15.0, "Tesla-T4"),
    )
}

# `none` runs vLLM's CPU build: for kind/minikube/k3d clusters and tests.
CPU = "none"


@dataclass(frozen=True)
class ModelShape:
    parameters_billion: float
    layers: int
    attention_heads: int
    kv_heads: int
    head_dim: int


# Shapes from each model's config.json on the Hugging Face hub.
MODELS: dict[str, ModelShape] = {
    "meta-llama/Llama-3.1-8B-Instruct": ModelShape(8.03, 32, 32, 8, 128),
    "meta-llama/Llama-3.1-70B-Instruct": ModelShape(70.6, 80, 64, 8, 128),
    "meta-llama/Llama-3.3-70B-Instruct": ModelShape(70.6, 80, 64, 8, 128),
    "meta-llama/Llama-3.2-1B-Instruct": ModelShape(1.24, 16, 32, 8, 64),
    "meta-llama/Llama-3.2-3B-Instruct": ModelShape(3.21, 28, 24, 8, 128),
    "Qwen/Qwen2.5-0.5B-Instruct": ModelShape(0.49, 24, 14, 2, 64),
    "Qwen/Qwen2.5-1.5B-Instruct": ModelShape(1.54, 28, 12, 2, 128),
    "Qwen/Qwen2.5-7B-Instruct": ModelShape(7.62, 28, 28, 4, 128),
    "Qwen/Qwen2.5-72B-Instruct": ModelShape(72.7, 80, 64, 8, 128),
    "mistralai/Mistral-7B-Instruct-v0.3": ModelShape(7.25, 32, 32, 8, 128),
}

_SIZE_IN_NAME = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)[bB](?![a-zA-Z])")


def parameters_from_name(model_id: str) -> float | None:
    """`org/Some-Model-13B-Chat` → 13.0; None when the name carries no size."""
    match = _SIZE_IN_NAME.search(model_id.rsplit("/", 1)[-1])
    return float(match.group(1)) if match else None


def bytes_per_parameter(dtype: str, quantization: str | None) -> float:
    if quantization in ("awq", "gptq", "bitsandbytes"):
        return 0.5
    if quantization == "fp8":
        return 1.0
    return 4.0 if dtype == "float32" else 2.0
