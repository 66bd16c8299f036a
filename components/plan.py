"""The serving plan: what a stack serves and how, decided once, for every target.

`serving_plan(config)` turns a validated `StackConfig` into plain facts: vLLM's command-line
arguments, the GPUs, the startup budget, the model cache size, the wrapper's settings and the
secret keys. The Kubernetes manifests, the Modal app spec and the Helm values read these and
derive nothing themselves; what stays in a target is only how that target spells them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from components import catalog, fit, wrapper_env
from components.config import StackConfig
from components.secrets import SECRETS, SecretKey

VLLM_PORT = 8000
# Assumed when no startupTimeout is set: a cold pull from the hub at 100 MiB/s, loading at
# 1 GiB/s, plus five minutes for image pull, CUDA graphs and compilation.
DOWNLOAD_MIB_PER_SECOND = 100
LOAD_GIB_PER_SECOND = 1
FIXED_STARTUP_SECONDS = 300
MIN_STARTUP_SECONDS = 600
# Weights assumed for the startup budget when the model's size is unknown.
UNKNOWN_WEIGHTS_GIB = 16.0
# The model cache when the model's size is unknown.
UNKNOWN_CACHE_SIZE = "200Gi"
# Before the startup probe's clock starts, a GPU pod waits for a node: the autoscaler provisions
# one (GKE and Karpenter GPU nodes take 3-10 min), the NVIDIA driver installs (GKE's installer
# DaemonSet or the GPU operator, ~5 min), and the kubelet pulls vLLM's image (~10 GiB, assumed at
# 50 MiB/s). `pulumi up` must wait for all of it, not only for the model to load.
NODE_PROVISION_SECONDS = 600
GPU_DRIVER_INSTALL_SECONDS = 300
VLLM_IMAGE_GIB = {"gpu": 10, "cpu": 3}
IMAGE_PULL_MIB_PER_SECOND = 50


@dataclass(frozen=True)
class OptionalFlag:
    """A vLLM flag passed only when its stack key is set (the chart reads the value of the same key).

    kind: "value" passes `flag value`; "number" the same, as a whole number; "switch" passes
    `--flag` for true and `--no-flag` for false; "on" passes `--flag` for true. Unset: nothing,
    so vLLM's own default applies.
    """

    flag: str
    key: str  # dotted camelCase path in the stack config and in the chart's values
    kind: Literal["value", "number", "switch", "on"]

    def args(self, value: Any) -> list[str]:
        if self.kind == "switch":
            return [] if value is None else [self.flag if value else f"--no-{self.flag[2:]}"]
        if not value:
            return []
        if self.kind == "on":
            return [self.flag]
        return [self.flag, str(int(value)) if self.kind == "number" else str(value)]


# In the order they follow vLLM's fixed arguments.
OPTIONAL_FLAGS = (
    OptionalFlag("--revision", "model.revision", "value"),
    OptionalFlag("--tokenizer-revision", "model.revision", "value"),  # the tokenizer from the same commit
    OptionalFlag("--quantization", "vllm.quantization", "value"),
    OptionalFlag("--max-num-seqs", "vllm.maxNumSeqs", "number"),
    OptionalFlag("--max-num-batched-tokens", "vllm.maxNumBatchedTokens", "number"),
    OptionalFlag("--enable-chunked-prefill", "vllm.enableChunkedPrefill", "switch"),
    OptionalFlag("--enable-prefix-caching", "vllm.enablePrefixCaching", "switch"),
    OptionalFlag("--enable-log-requests", "vllm.logRequests", "on"),
)


@dataclass(frozen=True)
class GpuPlan:
    type: str  # a catalog name, or catalog.CPU
    count: int  # per vLLM replica
    tensor_parallel_size: int
    # The catalog entry; None for vLLM's CPU build.
    spec: catalog.Gpu | None

    @property
    def is_cpu(self) -> bool:
        return self.spec is None


@dataclass(frozen=True)
class WrapperPlan:
    """The wrapper's settings, as the stack decides them; `environment` spells them as `VLLM_*`."""

    model: str
    port: int
    # `wrapper_env.STACK_SETTINGS` and `SCALER_SETTINGS`: variable → value, as the stack sets them.
    settings: dict[str, str]
    scaler_settings: dict[str, str]
    # `wrapper_env.AUTOSCALE_SETTINGS` when vllm.replicas is a {min, max} range, else empty.
    autoscale_settings: dict[str, str]
    # Where vLLM can scale to zero (Modal), a request may wait for a cold start before its own
    # timeout starts: the wrapper's timeout then covers the longer of the wake wait and the start.
    timeout_through_cold_start: int

    def environment(
        self, *, base_url: str | None = None, listen: bool = False, timeout: int | None = None
    ) -> dict[str, str]:
        """The plain (non-secret) settings; the keys come from the Secret (`secrets`).

        `base_url`: where vLLM is, when the target knows it before the wrapper starts;
        `listen`: set host and port (a target that runs the wrapper as its own server);
        `timeout`: the upstream timeout, when it is not the stack's own.
        """
        env = {wrapper_env.BASE_URL: base_url} if base_url else {}
        env[wrapper_env.MODEL] = self.model
        if listen:
            env |= {wrapper_env.WRAPPER_HOST: wrapper_env.LISTEN_HOST, wrapper_env.WRAPPER_PORT: str(self.port)}
        env |= self.settings
        if timeout is not None:
            env[wrapper_env.TIMEOUT] = str(timeout)
        return env

    def scaler_environment(self, namespace: str, statefulset: str) -> dict[str, str]:
        """The wrapper scales this StatefulSet (with an idle timeout, a replica range, or both)."""
        return (
            self.scaler_settings
            | {wrapper_env.K8S_NAMESPACE: namespace, wrapper_env.K8S_STATEFULSET: statefulset}
            | self.autoscale_settings
        )


@dataclass(frozen=True)
class ServingPlan:
    model_id: str
    served_name: str
    vllm_image: str
    gpu: GpuPlan
    replicas: int
    vllm_port: int
    # vLLM's OpenAI server arguments; never a secret (vLLM reads VLLM_API_KEY from its environment).
    vllm_args: tuple[str, ...]
    # How long a replica may take from start to ready.
    startup_budget_seconds: int
    # How long a new replica may stay Pending (node, driver, image pull) before its container starts.
    pending_budget_seconds: int
    # Seconds vLLM drains in-flight requests on SIGTERM.
    shutdown_timeout: int
    # The model cache per replica: twice the weights, so a new revision fits beside the old.
    cache_size: str
    idle_timeout: int
    wrapper: WrapperPlan
    secrets: tuple[SecretKey, ...] = SECRETS
    autoscales: bool = False  # vllm.replicas is a {min, max} range

    @property
    def scales_to_zero(self) -> bool:
        return self.idle_timeout > 0

    @property
    def wrapper_scales(self) -> bool:
        """The wrapper owns the replica count: it gets the scaler's service account, Role and settings."""
        return self.scales_to_zero or self.autoscales

    @property
    def await_budget_seconds(self) -> int:
        """How long a deploy waits for vLLM to become ready: from Pending to the startup probe's end."""
        return self.pending_budget_seconds + self.startup_budget_seconds


# ---------------------------------------------------------------- decisions


def startup_budget_seconds(config: StackConfig) -> int:
    if config.vllm.startup_timeout:
        return config.vllm.startup_timeout
    weights = fit.weights_gib(config) or UNKNOWN_WEIGHTS_GIB
    estimate = weights * 1024 / DOWNLOAD_MIB_PER_SECOND + weights / LOAD_GIB_PER_SECOND
    seconds = max(MIN_STARTUP_SECONDS, FIXED_STARTUP_SECONDS + estimate)
    return int(math.ceil(seconds / 60) * 60)


def pending_budget_seconds(gpu: GpuPlan) -> int:
    """A CPU pod (kind, minikube) lands on a running node; a GPU pod may wait for a new one."""
    pull = VLLM_IMAGE_GIB["cpu" if gpu.is_cpu else "gpu"] * 1024 // IMAGE_PULL_MIB_PER_SECOND
    if gpu.is_cpu:
        return pull
    return NODE_PROVISION_SECONDS + GPU_DRIVER_INSTALL_SECONDS + pull


def cache_size(config: StackConfig) -> str:
    if config.kubernetes.cache.size:
        return config.kubernetes.cache.size
    weights = fit.weights_gib(config)
    return f"{math.ceil(weights * 2 + 10)}Gi" if weights else UNKNOWN_CACHE_SIZE


def vllm_args(config: StackConfig, gpu: GpuPlan) -> tuple[str, ...]:
    v = config.vllm
    args = [
        "--model", config.model.id,
        "--served-model-name", config.model.name,
        "--host", "0.0.0.0",
        "--port", str(VLLM_PORT),
        "--tensor-parallel-size", str(gpu.tensor_parallel_size),
        "--max-model-len", str(v.max_model_len),
        "--dtype", v.dtype,
    ]  # fmt: skip
    if not gpu.is_cpu:
        args += ["--gpu-memory-utilization", f"{v.gpu_memory_utilization:g}"]
    stack = config.model_dump(by_alias=True)
    for option in OPTIONAL_FLAGS:
        args += option.args(_at(stack, option.key))
    # On SIGTERM vLLM finishes in-flight requests for this long (its default, 0, aborts them).
    args += ["--shutdown-timeout", str(v.shutdown_timeout)]
    args += ["--uvicorn-log-level", v.log_level]
    return (*args, *v.extra_args)


def _at(document: dict[str, Any], key: str) -> Any:
    """`wrapper.maxRetries` → document["wrapper"]["maxRetries"]."""
    for part in key.split("."):
        document = document[part]
    return document


def serving_plan(config: StackConfig) -> ServingPlan:
    """The plan for a validated stack config (any target)."""
    spec = None if config.gpu.is_cpu else catalog.GPUS[config.gpu.type]
    gpu = GpuPlan(config.gpu.type, config.gpu.count, config.tensor_parallel_size, spec)
    budget = startup_budget_seconds(config)
    w = config.wrapper
    stack = config.model_dump(by_alias=True)
    wrapper = WrapperPlan(
        model=config.model.name,
        port=w.port,
        settings={
            s.variable: s.format(value)
            for s in wrapper_env.STACK_SETTINGS
            if (value := _at(stack, s.key)) is not None or not s.optional
        },
        scaler_settings={s.variable: s.format(_at(stack, s.key)) for s in wrapper_env.SCALER_SETTINGS},
        autoscale_settings=(
            {s.variable: s.format(_at(stack, s.key)) for s in wrapper_env.AUTOSCALE_SETTINGS}
            if config.autoscales
            else {}
        ),
        timeout_through_cold_start=w.timeout + max(w.wake_timeout, budget),
    )
    return ServingPlan(
        model_id=config.model.id,
        served_name=config.model.name,
        vllm_image=config.vllm.image,
        gpu=gpu,
        replicas=config.vllm.replicas,
        vllm_port=VLLM_PORT,
        vllm_args=vllm_args(config, gpu),
        startup_budget_seconds=budget,
        pending_budget_seconds=pending_budget_seconds(gpu),
        shutdown_timeout=config.vllm.shutdown_timeout,
        cache_size=cache_size(config),
        idle_timeout=config.idle_timeout,
        wrapper=wrapper,
        autoscales=config.autoscales,
    )
