"""Does the model fit the GPUs? Arithmetic done before anything is deployed.

need  = weights (parameters × bytes at the dtype/quantisation)
      + KV cache for one full-length sequence (vLLM refuses to start without it)
      + a runtime reserve per GPU (CUDA context, activations, graphs)
have  = GPU memory × gpu_memory_utilization × count
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from components import catalog

if TYPE_CHECKING:
    from components.config import StackConfig

RUNTIME_RESERVE_GIB = 1.5
# When a model's shape is unknown: KV bytes per token per billion parameters, from
# Llama-3.1-8B (128 KiB/token) — generous for GQA models, tight for old MHA ones.
_KV_BYTES_PER_TOKEN_PER_BILLION = 16 * 1024


@dataclass(frozen=True)
class FitReport:
    model: str
    gpu: str
    count: int
    utilization: float
    parameters_billion: float
    bytes_per_parameter: float
    weights_gib: float
    kv_cache_gib: float
    max_model_len: int
    need_gib: float
    have_gib: float
    smallest_count: int | None

    @property
    def fits(self) -> bool:
        return self.need_gib <= self.have_gib

    def explain(self) -> str:
        text = (
            f"{self.model} does not fit {self.count} × {self.gpu}: it needs "
            f"{self.weights_gib:.1f} GiB of weights ({self.parameters_billion:g}B parameters × "
            f"{self.bytes_per_parameter:g} bytes) + {self.kv_cache_gib:.1f} GiB KV cache for one "
            f"{self.max_model_len}-token sequence + {RUNTIME_RESERVE_GIB:g} GiB per GPU = "
            f"{self.need_gib:.1f} GiB, but {self.count} × {self.gpu} × {self.utilization:g} "
            f"utilisation gives {self.have_gib:.1f} GiB."
        )
        if self.smallest_count:
            return f"{text} Set gpu.count: {self.smallest_count} (the smallest count that fits)."
        return f"{text} No count up to 8 fits: pick a larger GPU type, quantisation or a smaller model."


def parameters_billion(config: StackConfig) -> float | None:
    shape = catalog.MODELS.get(config.model.id)
    return (
        config.model.parameters_billion
        or (shape.parameters_billion if shape else None)
        or catalog.parameters_from_name(config.model.id)
    )


def weights_gib(config: StackConfig) -> float | None:
    params = parameters_billion(config)
    if params is None:
        return None
    per_param = catalog.bytes_per_parameter(config.vllm.dtype, config.vllm.quantization)
    return params * 1e9 * per_param / catalog.GIB


def _kv_gib(config: StackConfig, params_b: float) -> float:
    shape = catalog.MODELS.get(config.model.id)
    kv_dtype_bytes = 4 if config.vllm.dtype == "float32" else 2
    per_token: float
    if shape:
        per_token = 2 * shape.layers * shape.kv_heads * shape.head_dim * kv_dtype_bytes
    else:
        per_token = params_b * _KV_BYTES_PER_TOKEN_PER_BILLION
    return per_token * config.vllm.max_model_len / catalog.GIB


def _valid_counts(config: StackConfig) -> list[int]:
    """Tensor parallel sizes vLLM accepts: they must divide the attention heads."""
    shape = catalog.MODELS.get(config.model.id)
    counts = [1, 2, 4, 8]
    return [c for c in counts if shape is None or shape.attention_heads % c == 0]


def check_fit(config: StackConfig) -> FitReport | None:
    """None when there is nothing to check (CPU serving, or a model of unknown size)."""
    if config.gpu.is_cpu:
        return None
    params = parameters_billion(config)
    if params is None:
        return None
    gpu = catalog.GPUS[config.gpu.type]
    util = config.vllm.gpu_memory_utilization
    weights = weights_gib(config) or 0.0
    kv = _kv_gib(config, params)

    def need(count: int) -> float:
        return weights + kv + RUNTIME_RESERVE_GIB * count

    def have(count: int) -> float:
        return gpu.memory_gib * util * count

    count = config.gpu.count
    smallest = next((c for c in _valid_counts(config) if need(c) <= have(c)), None)
    return FitReport(
        model=config.model.id,
        gpu=gpu.name,
        count=count,
        utilization=util,
        parameters_billion=params,
        bytes_per_parameter=catalog.bytes_per_parameter(config.vllm.dtype, config.vllm.quantization),
        weights_gib=weights,
        kv_cache_gib=kv,
        max_model_len=config.vllm.max_model_len,
        need_gib=need(count),
        have_gib=have(count),
        smallest_count=smallest,
    )
