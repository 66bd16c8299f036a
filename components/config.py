"""A stack's configuration as typed data, parsed once.

`parse_stack_config` takes the raw `vllm-deploy:*` keys of a stack (from Pulumi's
config or from `stacks/Pulumi.<env>.yaml`) and returns a `StackConfig`, or raises
`ConfigError` whose lines each name the key and say how to fix it. Nothing in
here knows about Pulumi or Kubernetes objects.
"""

from __future__ import annotations

import difflib
import math
import re
import typing
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from components import catalog, gpu_pool
from components.fit import FitReport, check_fit
from components.observability import ObservabilityConfig
from components.secrets import SECRET_KEYS, secret_flag
from components.wrapper_env import MAX_RETRIES_LIMIT

PROJECT = "vllm-deploy"


class ConfigError(ValueError):
    """A stack config that must not be deployed. One line per problem: `key: what and how to fix`."""

    def __init__(self, problems: list[str], source: str = "") -> None:
        self.problems = problems
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__("\n".join(f"{where}{p}" for p in problems))


# ---------------------------------------------------------------- value types

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h)?\s*$")
_UNITS = {None: 1, "s": 1, "m": 60, "h": 3600}


def _seconds(value: Any) -> Any:
    """`120`, `"120s"`, `"2m"`, `"1h"` → seconds; `"never"`/`"off"` → 0 (always on)."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 300, '5m' or 'never'")
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        if value.strip().lower() in ("never", "off", "none", "0"):
            return 0
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _UNITS[match.group(2)]
    raise ValueError(f"{value!r} is not a duration; use seconds (300), '5m', '1h' or 'never'")


def _whole_seconds(value: float) -> int:
    if value < 0:
        raise ValueError("must not be negative; use 0 or 'never' to keep it always on")
    return math.ceil(value)


Seconds = Annotated[int, BeforeValidator(_seconds), AfterValidator(_whole_seconds)]

_QUANTITY = re.compile(r"^\d+(\.\d+)?(Ki|Mi|Gi|Ti|m|k|M|G|T)?$")


def _quantity(value: Any) -> str:
    text = str(value)
    if not _QUANTITY.match(text):
        raise ValueError(f"{text!r} is not a Kubernetes quantity such as '500m', '2Gi' or '200Gi'")
    return text


Quantity = Annotated[str, BeforeValidator(_quantity)]


class Section(BaseModel):
    """Keys are camelCase in stack files, as in every Pulumi config; misspelt keys are errors."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


# ------------------------------------------------------------------- sections


class ModelConfig(Section):
    id: str = Field(min_length=1, description="Hugging Face model id or a path inside the image")
    served_name: str | None = None
    # Gated models (Llama) need the hfToken secret; public ones don't.
    gated: bool = True
    revision: str | None = None
    parameters_billion: float | None = Field(default=None, gt=0)

    @property
    def name(self) -> str:
        return self.served_name or self.id.rsplit("/", 1)[-1].lower()


class GpuConfig(Section):
    type: str = "A100-80GB"
    count: int = Field(default=1, ge=1, description="GPUs per vLLM replica = tensor parallel size")

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value != catalog.CPU and value not in catalog.GPUS:
            known = ", ".join([*catalog.GPUS, catalog.CPU])
            raise ValueError(f"unknown GPU type {value!r}; use one of {known}")
        return value

    @property
    def is_cpu(self) -> bool:
        return self.type == catalog.CPU


class Resources(Section):
    cpu: Quantity
    memory: Quantity


class ResourceBounds(Section):
    requests: Resources
    limits: Resources


class AutoscaleConfig(Section):
    """Set from `vllm.replicas: {min, max}` (an integer keeps a fixed count); see wrapper/scaling/README.md."""

    min_replicas: int = Field(ge=0)
    max_replicas: int = Field(ge=1)
    # Requests running + waiting per ready vLLM replica (from each replica's /metrics) to aim for.
    target_in_flight: float = Field(default=8, gt=0)
    # Demand must stay above the target this long before a scale-up (spikes shorter are ignored).
    window: Seconds = 10
    # Demand must stay below it this long before ONE replica is drained and removed.
    scale_down_delay: Seconds = 300


class VllmConfig(Section):
    image: str = "vllm/vllm-openai:v0.32.0"
    # The replicas the StatefulSet starts with and a wake restores; `{min, max}` in the stack file
    # becomes max(min, 1) here and `autoscale` holds the range.
    replicas: int = Field(default=1, ge=1)
    autoscale: AutoscaleConfig | None = None
    max_model_len: int = Field(default=8192, ge=128)
    gpu_memory_utilization: float = Field(default=0.90, gt=0.1, le=0.99)
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    quantization: Literal["awq", "gptq", "fp8", "bitsandbytes"] | None = None
    max_num_seqs: int | None = Field(default=None, ge=1)
    max_num_batched_tokens: int | None = Field(default=None, ge=1)
    enable_chunked_prefill: bool | None = None
    enable_prefix_caching: bool | None = None
    log_requests: bool = False
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    extra_args: list[str] = Field(default_factory=list)
    # How long a replica may take from start to ready; default derived from the model size.
    startup_timeout: Seconds | None = None
    shutdown_timeout: Seconds = 30
    # CPU and memory for the vLLM container (GPUs come from `gpu`).
    resources: ResourceBounds | None = None

    @field_validator("image")
    @classmethod
    def _pinned(cls, value: str) -> str:
        tag = value.rsplit("/", 1)[-1]
        if "@sha256:" not in value and (":" not in tag or tag.endswith(":latest")):
            raise ValueError(f"{value!r} is not pinned; give a version tag or a digest, never latest")
        return value

    @property
    def max_replicas(self) -> int:
        """The most replicas that can run (what the router's URL list and the cost's worst case cover)."""
        return self.autoscale.max_replicas if self.autoscale else self.replicas

    @field_validator("extra_args")
    @classmethod
    def _no_secrets_in_args(cls, args: list[str]) -> list[str]:
        for arg in args:
            if flag := secret_flag(arg):
                raise ValueError(
                    f"{flag} must not be passed as an argument (it would show in "
                    "`ps` and in the pod spec); set the vllmApiKey / hfToken secrets instead"
                )
        return args


class Replicas(Section):
    min: int = Field(default=2, ge=1)
    max: int = Field(default=10, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> Replicas:
        if self.max < self.min:
            raise ValueError(f"max ({self.max}) must be ≥ min ({self.min})")
        return self


class WrapperLimits(Section):
    """Caps the wrapper enforces on every route (400 naming the parameter), and per-caller rate
    limits (429 + Retry-After; token buckets per wrapper replica). Unset: the wrapper's defaults
    (`n` at most 4, the rest off); see wrapper/README.md."""

    max_n: int | None = Field(default=None, ge=1, le=1000)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    max_prompt_chars: int | None = Field(default=None, ge=1)
    rate_limit_requests: int | None = Field(default=None, ge=1, description="per caller and minute")
    rate_limit_tokens: int | None = Field(default=None, ge=1, description="per caller and minute")


class WrapperConfig(Section):
    image: str = "ghcr.io/vllm-deploy/wrapper:0.1.0"
    port: int = Field(default=8001, ge=1024, le=65535)
    replicas: Replicas = Replicas()
    target_cpu_utilization: int = Field(default=70, ge=10, le=100)
    resources: ResourceBounds = ResourceBounds(
        requests=Resources(cpu="250m", memory="128Mi"),
        limits=Resources(cpu="1", memory="256Mi"),
    )
    default_max_tokens: int = Field(default=2048, ge=1)
    default_temperature: float = Field(default=0.7, ge=0, le=2)
    max_retries: int = Field(default=3, ge=0, le=MAX_RETRIES_LIMIT)
    timeout: Seconds = 60
    # How long a request may wait for a scaled-to-zero vLLM to wake (0 = answer 503 at once).
    wake_timeout: Seconds = 600
    limits: WrapperLimits = WrapperLimits()
    # How the wrapper picks a vLLM replica; unset: `prefix` when there are several.
    routing: Literal["prefix", "least-load", "round-robin"] | None = None
    # A streamed request vLLM has not answered after this long gets the SSE headers, then a
    # `: keep-alive` comment every interval (wrapper/keepalive.py); unset: the wrapper's 5 s and 15 s.
    stream_keepalive_after: Seconds | None = Field(default=None, ge=1)
    stream_keepalive_interval: Seconds | None = Field(default=None, ge=1)

    @field_validator("image")
    @classmethod
    def _pinned(cls, value: str) -> str:
        return VllmConfig._pinned(value)


class Toleration(Section):
    key: str | None = None
    operator: Literal["Exists", "Equal"] = "Exists"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


class CacheConfig(Section):
    # Per vLLM replica; default: twice the weights, so a new revision fits beside the old.
    size: Quantity | None = None
    storage_class: str | None = None


_LABEL_KEY = r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
_LABEL_VALUE = r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$"


class GpuPool(Section):
    """Which labels select vLLM's GPU nodes (components/gpu_pool.py): `gke`, `karpenter`,
    `nodeGroup` (with `label` and `value`) or `gfd`."""

    preset: gpu_pool.Preset
    # nodeGroup only: the label every node of the group carries, e.g. eks.amazonaws.com/nodegroup.
    label: str | None = Field(default=None, pattern=_LABEL_KEY, max_length=316)
    value: str | None = Field(default=None, pattern=_LABEL_VALUE, max_length=63)


class KubernetesConfig(Section):
    # Prefix of every object's name (`<releaseName>`, `<releaseName>-wrapper`, …), as a Helm release.
    release_name: str = Field(default="vllm", pattern=r"^[a-z]([-a-z0-9]*[a-z0-9])?$", max_length=40)
    namespace: str = Field(default="vllm", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    create_namespace: bool = True
    # How vLLM finds its GPU nodes; unset: the `gfd` preset (unless node_selector replaces it).
    gpu_pool: GpuPool | None = None
    # Unset: the preset's labels. Alone it replaces them; beside gpu_pool it adds to them.
    node_selector: dict[str, str] | None = None
    # Default: tolerate the `nvidia.com/gpu` taint GPU node pools carry.
    tolerations: list[Toleration] | None = None
    cache: CacheConfig = CacheConfig()
    context: str | None = None


class ModalConfig(Section):
    architecture: Literal["integrated", "autoscale"] = "autoscale"
    app_name: str | None = Field(default=None, pattern=r"^[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}$")
    # The stack's own Modal Secret; default `vllm-secrets-<stack>`. Naming one that exists adopts it:
    # the stack writes its keys into it but never deletes it (migration from the shared `vllm-secrets`).
    secret_name: str | None = Field(default=None, pattern=r"^[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}$")
    # Per-request limit on each function (a web request is one Modal input): one stuck stream holds
    # the GPUs this long at most. The old integrated server allowed 24 h.
    function_timeout: Seconds = 1800
    max_concurrent_inputs: int = Field(default=32, ge=1)
    min_containers: int = Field(default=0, ge=0)
    # GPU containers at most: a burst queues instead of starting more GPUs (the cost ceiling).
    max_containers: int = Field(default=1, ge=1)
    # The vLLM release pip-installed in the Modal GPU image; default: the vllm.image tag (v0.32.0 → 0.32.0).
    vllm_version: str | None = Field(default=None, pattern=r"^\d+(\.\d+){1,3}(\.post\d+)?$")
    # Concurrent requests per always-on wrapper container (autoscale).
    wrapper_max_concurrent_inputs: int = Field(default=100, ge=1)
    # Download the weights (at model.revision) into the Volume once after deploy, before any request.
    predownload: bool = False


class CostConfig(Section):
    # Your own price per GPU-hour (e.g. a reserved cluster); default: the shipped price table.
    gpu_hourly: float | None = Field(default=None, ge=0)
    provider: str | None = None


class StackConfig(Section):
    target: Literal["kubernetes", "modal"] = "kubernetes"
    model: ModelConfig
    gpu: GpuConfig = GpuConfig()
    idle_timeout: Seconds = 0
    vllm: VllmConfig = VllmConfig()
    wrapper: WrapperConfig = WrapperConfig()
    kubernetes: KubernetesConfig = KubernetesConfig()
    modal: ModalConfig = ModalConfig()
    observability: ObservabilityConfig = ObservabilityConfig()
    cost: CostConfig = CostConfig()
    # Which of SECRET_KEYS the stack sets (their values never enter this object).
    secrets_present: frozenset[str] = Field(default=frozenset(), exclude=True)

    @property
    def tensor_parallel_size(self) -> int:
        return 1 if self.gpu.is_cpu else self.gpu.count

    @property
    def scales_to_zero(self) -> bool:
        return self.idle_timeout > 0

    @property
    def autoscales(self) -> bool:
        return self.vllm.autoscale is not None

    @property
    def wrapper_scales_vllm(self) -> bool:
        """The wrapper owns vLLM's replica count (scale-to-zero, autoscaling, or both)."""
        return self.scales_to_zero or self.autoscales

    @model_validator(mode="before")
    @classmethod
    def _replica_range(cls, data: Any) -> Any:
        """`vllm.replicas: {min, max}` → `replicas: max(min, 1)` and `autoscale.{min,max}Replicas`."""
        vllm = data.get("vllm") if isinstance(data, dict) else None
        if not isinstance(vllm, dict):
            return data
        r, autoscale = vllm.get("replicas"), vllm.get("autoscale")
        if not isinstance(r, dict):
            if autoscale is not None:
                raise ValueError(
                    "vllm.autoscale: applies only with vllm.replicas: {min, max}; set a range, or remove vllm.autoscale"
                )
            return data
        problems = [f"vllm.replicas.{k}: unknown key; use min and max" for k in r if k not in ("min", "max")]
        for k, least in (("min", 0), ("max", 1)):
            v = r.get(k)
            if isinstance(v, bool) or not isinstance(v, int) or v < least:
                problems.append(f"vllm.replicas.{k}: required, a whole number >= {least} (got {v!r})")
        if not problems and r["max"] < r["min"]:
            problems.append(
                f"vllm.replicas.max: {r['max']} is below vllm.replicas.min {r['min']}; raise max or lower min"
            )
        if problems:
            raise ValueError("\n".join(problems))
        if autoscale is not None and not isinstance(autoscale, dict):
            return data  # the section's own validation names the key
        ranged = {**(autoscale or {}), "minReplicas": r["min"], "maxReplicas": r["max"]}
        return {**data, "vllm": {**vllm, "replicas": max(r["min"], 1), "autoscale": ranged}}

    @property
    def fit(self) -> FitReport | None:
        return check_fit(self)

    @model_validator(mode="after")
    def _consistent(self) -> StackConfig:
        problems: list[tuple[str, str]] = []
        shape = catalog.MODELS.get(self.model.id)
        if shape and not self.gpu.is_cpu and shape.attention_heads % self.gpu.count:
            problems.append(
                (
                    "gpu.count",
                    f"{self.gpu.count} does not divide {self.model.id}'s {shape.attention_heads} "
                    "attention heads, so vLLM cannot split it across the GPUs; use 1, 2, 4 or 8",
                )
            )
        report = check_fit(self)
        if report is not None and not report.fits:
            problems.append(("gpu.count", report.explain()))
        if (a := self.vllm.autoscale) is not None:
            if self.target != "kubernetes":
                problems.append(
                    (
                        "vllm.replicas",
                        "{min, max} autoscales on Kubernetes; on Modal set modal.minContainers/maxContainers",
                    )
                )
            elif a.min_replicas == 0 and not self.scales_to_zero:
                problems.append(
                    ("vllm.replicas.min", "0 scales to zero, which needs an idleTimeout (e.g. 15m); or use min: 1")
                )
            elif a.min_replicas >= 1 and self.scales_to_zero:
                problems.append(
                    (
                        "idleTimeout",
                        f"scales to zero, below vllm.replicas.min {a.min_replicas}; use min: 0, or idleTimeout: never",
                    )
                )
            if not 0 < a.window <= 15:
                problems.append(
                    ("vllm.autoscale.window", "1 s … 15 s: a scale-up is decided within 15 s of sustained demand")
                )
        if self.target == "modal":
            if self.gpu.is_cpu:
                problems.append(("gpu.type", "Modal runs vLLM on GPUs; pick a GPU type, not 'none'"))
            if self.idle_timeout and not 2 <= self.idle_timeout <= 3600:
                problems.append(
                    ("idleTimeout", "Modal's scale-down window is 2 s … 1 h; use a value in that range or 'never'")
                )
            if self.modal.min_containers > self.modal.max_containers:
                problems.append(
                    (
                        "modal.maxContainers",
                        f"{self.modal.max_containers} is below modal.minContainers "
                        f"{self.modal.min_containers}; raise maxContainers or lower minContainers",
                    )
                )
        if self.target == "kubernetes":
            problems += _gpu_pool_problems(self)
        if problems:
            raise ValueError("\n".join(f"{key}: {msg}" for key, msg in problems))
        return self


def _gpu_pool_problems(config: StackConfig) -> list[tuple[str, str]]:
    """What a GPU pool preset needs and the stack does not give, one (key, fix) each."""
    pool = config.kubernetes.gpu_pool
    if pool is None:
        return []
    if config.gpu.is_cpu:
        return [
            ("kubernetes.gpuPool", "vLLM runs on CPU (gpu.type none); remove gpuPool, or use kubernetes.nodeSelector")
        ]
    problems: list[tuple[str, str]] = []
    if pool.preset == "nodeGroup":
        for key in ("label", "value"):
            if getattr(pool, key) is None:
                problems.append(
                    (
                        f"kubernetes.gpuPool.{key}",
                        "required with preset nodeGroup: the node label every node of the GPU group carries and its "
                        "value, e.g. label: eks.amazonaws.com/nodegroup (EKS) or kubernetes.azure.com/agentpool (AKS)",
                    )
                )
    else:
        for key in ("label", "value"):
            if getattr(pool, key) is not None:
                problems.append(
                    (f"kubernetes.gpuPool.{key}", f"only with preset nodeGroup; remove it for {pool.preset}")
                )
        if gpu_pool.preset_labels(pool.preset, catalog.GPUS[config.gpu.type]) is None:
            offered = [g for g in catalog.GPUS.values() if gpu_pool.preset_labels(pool.preset, g)]
            problems.append(
                (
                    "kubernetes.gpuPool.preset",
                    f"{pool.preset} clusters offer no {config.gpu.type} nodes; pick a gpu.type of "
                    f"{', '.join(g.name for g in offered)}, or preset nodeGroup or gfd",
                )
            )
    if pool.preset in gpu_pool.NEEDS_STORAGE_CLASS and not config.kubernetes.cache.storage_class:
        problems.append(
            (
                "kubernetes.cache.storageClass",
                f"required with kubernetes.gpuPool.preset {pool.preset}: EKS 1.30 and later mark no StorageClass "
                "default, so the cache claim (and vLLM) would stay Pending; set it to one `kubectl get storageclass` "
                "lists, e.g. gp3 (EBS CSI)",
            )
        )
    return problems


# ---------------------------------------------------------------------- parse


def _key(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc if not isinstance(part, int)) or "(stack)"


def _keys_beside(loc: tuple[Any, ...]) -> list[str]:
    """The keys a stack file may write where ``loc`` points (camelCase, as in the file)."""
    model: type[BaseModel] = StackConfig
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = next((f for name, f in model.model_fields.items() if part in (name, f.alias)), None)
        inner = list(typing.get_args(field.annotation) or (field.annotation,)) if field else []
        sections = [a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)]
        if not sections:
            return []
        model = sections[0]
    keys = [f.alias or name for name, f in model.model_fields.items() if name != "secrets_present"]
    return keys + list(SECRET_KEYS) if model is StackConfig else keys


def _unknown_key(loc: tuple[Any, ...]) -> str:
    close = difflib.get_close_matches(str(loc[-1]), _keys_beside(loc), n=1, cutoff=0.6)
    if close:
        return f"unknown key; did you mean {close[0]!r}?"
    return "unknown key; check its spelling against the README's configuration table"


def _problems(error: ValidationError) -> list[str]:
    lines: list[str] = []
    for item in error.errors(include_url=False):
        key, message = _key(item["loc"]), item["msg"]
        message = message.removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = _unknown_key(item["loc"])
        elif item["type"] == "missing":
            message = "required; set it in the stack file"
        elif isinstance(item.get("input"), (int, float, str)) and not isinstance(item["input"], bool):
            message = f"{message} (got {item['input']!r})"
        if not item["loc"]:  # cross-field problems already name their own keys
            lines.extend(message.splitlines())
            continue
        lines.append(f"{key}: {message}")
    return lines


def parse_stack_config(
    raw: dict[str, Any],
    *,
    secrets_present: set[str] | frozenset[str] = frozenset(),
    require_secrets: bool = True,
    source: str = "",
) -> StackConfig:
    """Validate a stack's `vllm-deploy:*` config (keys without the project prefix).

    `raw` may still hold the secret keys (as Pulumi's config does); their values are
    never read here, only whether they are set.
    """
    values = {k: v for k, v in raw.items() if k not in SECRET_KEYS}
    present = frozenset(secrets_present) | {k for k in SECRET_KEYS if raw.get(k) not in (None, "")}
    try:
        config = StackConfig.model_validate({**values, "secretsPresent": present})
    except ValidationError as error:
        raise ConfigError(_problems(error), source) from None
    if require_secrets:
        missing = missing_secrets(config)
        if missing:
            raise ConfigError(missing, source)
    return config


def missing_secrets(config: StackConfig) -> list[str]:
    problems = []
    if "vllmApiKey" not in config.secrets_present:
        problems.append(
            "vllmApiKey: required (vLLM is never left open); set it from a file, never on the command line: "
            "`pulumi config set --secret vllmApiKey < ~/.secrets/vllm-key`"
        )
    if config.model.gated and "hfToken" not in config.secrets_present:
        problems.append(
            f"hfToken: required for the gated model {config.model.id}; set it from a file: "
            "`pulumi config set --secret hfToken < ~/.secrets/hf-token`, "
            "or set model.gated: false for a public model"
        )
    if config.target == "modal" and config.modal.architecture == "autoscale":
        for key in ("modalProxyTokenId", "modalProxyTokenSecret"):
            if key not in config.secrets_present:
                problems.append(
                    f"{key}: required for autoscale (the GPU endpoint takes only the wrapper's proxy auth token); "
                    "create a token at https://modal.com/settings/proxy-auth-tokens, then "
                    f"`pulumi config set --secret {key} < file`"
                )
    return problems


def strip_project_prefix(config: dict[str, Any]) -> dict[str, Any]:
    """`{"vllm-deploy:gpu": ...}` → `{"gpu": ...}`; keys of other namespaces are dropped."""
    prefix = f"{PROJECT}:"
    return {k[len(prefix) :]: v for k, v in config.items() if k.startswith(prefix)}
