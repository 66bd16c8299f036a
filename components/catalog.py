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
    # Every `nvidia.com/gpu.product` label NVIDIA's GPU feature discovery puts on a node with this
    # GPU: nvidia-smi's name with spaces as dashes, one per form factor (SXM and PCIe differ).
    node_products: tuple[str, ...]
    # GKE's `cloud.google.com/gke-accelerator` node pool label, one per machine series that
    # carries this GPU; empty where GKE offers none (cloud.google.com/compute/docs/gpus).
    gke_accelerators: tuple[str, ...] = ()
    # Karpenter's `karpenter.k8s.aws/instance-gpu-name` and `instance-gpu-memory` (MiB per GPU),
    # from its instance-type reference (aws/karpenter-provider-aws website/.../instance-types.md).
    # The name alone is ambiguous: `a100` is both p4d (40960) and p4de (81920).
    karpenter_name: str | None = None
    karpenter_memory_mib: int | None = None
    # The most of this GPU Modal attaches to one container (`A100-80GB:8`).
    modal_max_count: int = 8

    @property
    def node_product(self) -> str:
        """The first (SXM, where there are several) product name."""
        return self.node_products[0]


GPUS: dict[str, Gpu] = {
    gpu.name: gpu
    for gpu in (
        Gpu(
            "A100-80GB",
            80,
            ("NVIDIA-A100-SXM4-80GB", "NVIDIA-A100-80GB-PCIe"),
            ("nvidia-a100-80gb",),
            "a100",
            81920,
        ),
        Gpu(
            "A100-40GB",
            40,
            ("NVIDIA-A100-SXM4-40GB", "NVIDIA-A100-PCIE-40GB"),
            ("nvidia-tesla-a100",),
            "a100",
            40960,
        ),
        # A3 High and A3 Mega node pools name the same H100 80GB differently.
        Gpu(
            "H100",
            79.6,
            ("NVIDIA-H100-80GB-HBM3", "NVIDIA-H100-PCIe"),
            ("nvidia-h100-80gb", "nvidia-h100-mega-80gb"),
            "h100",
            81920,
        ),
        Gpu("H200", 140.4, ("NVIDIA-H200", "NVIDIA-H200-NVL"), ("nvidia-h200-141gb",), "h200", 144384),
        Gpu("B200", 179.1, ("NVIDIA-B200",), ("nvidia-b200",), "b200", 183359),
        Gpu("L40S", 45.0, ("NVIDIA-L40S",), (), "l40s", 45776),
        Gpu("A10G", 22.5, ("NVIDIA-A10G",), (), "a10g", 22888, modal_max_count=4),
        Gpu("L4", 22.5, ("NVIDIA-L4",), ("nvidia-l4",), "l4", 22888),
        Gpu("T4", 15.0, ("Tesla-T4",), ("nvidia-tesla-t4",), "t4", 16384),
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
