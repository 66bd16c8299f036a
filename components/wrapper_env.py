"""The wrapper's environment contract: the `VLLM_*` variables of wrapper/settings.py a deployment sets.

One name per setting, for every producer (the Kubernetes manifests, the Modal app, the chart, which
is generated from these names). The wrapper never imports components/; a test checks each name
against the wrapper's `Settings`. Standard library only: the Modal wrapper container imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

BASE_URL = "VLLM_BASE_URL"
MODEL = "VLLM_MODEL"
API_KEY = "VLLM_API_KEY"  # from the Secret only
WRAPPER_HOST = "VLLM_WRAPPER_HOST"
WRAPPER_PORT = "VLLM_WRAPPER_PORT"
WRAPPER_API_KEY = "VLLM_WRAPPER_API_KEY"  # from the Secret only
DEFAULT_MAX_TOKENS = "VLLM_DEFAULT_MAX_TOKENS"
DEFAULT_TEMPERATURE = "VLLM_DEFAULT_TEMPERATURE"
MAX_RETRIES = "VLLM_MAX_RETRIES"
TIMEOUT = "VLLM_TIMEOUT"
LOG_LEVEL = "VLLM_LOG_LEVEL"
IDLE_TIMEOUT = "VLLM_IDLE_TIMEOUT"
WAKE_TIMEOUT = "VLLM_WAKE_TIMEOUT"
K8S_NAMESPACE = "VLLM_K8S_NAMESPACE"
K8S_STATEFULSET = "VLLM_K8S_STATEFULSET"
K8S_REPLICAS = "VLLM_K8S_REPLICAS"
MAX_N = "VLLM_MAX_N"
MAX_COMPLETION_TOKENS = "VLLM_MAX_COMPLETION_TOKENS"
MAX_PROMPT_CHARS = "VLLM_MAX_PROMPT_CHARS"
RATE_LIMIT_REQUESTS = "VLLM_RATE_LIMIT_REQUESTS"
RATE_LIMIT_TOKENS = "VLLM_RATE_LIMIT_TOKENS"
ROUTING = "VLLM_ROUTING"
STREAM_KEEPALIVE_AFTER = "VLLM_STREAM_KEEPALIVE_AFTER"
STREAM_KEEPALIVE_INTERVAL = "VLLM_STREAM_KEEPALIVE_INTERVAL"
AUTOSCALE_MIN = "VLLM_AUTOSCALE_MIN"
AUTOSCALE_MAX = "VLLM_AUTOSCALE_MAX"
AUTOSCALE_TARGET_IN_FLIGHT = "VLLM_AUTOSCALE_TARGET_IN_FLIGHT"
AUTOSCALE_WINDOW = "VLLM_AUTOSCALE_WINDOW"
AUTOSCALE_SCALE_DOWN_DELAY = "VLLM_AUTOSCALE_SCALE_DOWN_DELAY"
AUTOSCALE_DRAIN_TIMEOUT = "VLLM_AUTOSCALE_DRAIN_TIMEOUT"

# The bound wrapper/settings.py puts on VLLM_MAX_RETRIES; the stack config accepts the same range.
MAX_RETRIES_LIMIT = 20
# Where the wrapper listens inside a container (all interfaces; the port is the stack's).
LISTEN_HOST = "0.0.0.0"


@dataclass(frozen=True)
class Setting:
    """A wrapper setting copied from one stack key; the chart reads the value of the same name."""

    variable: str
    key: str  # dotted camelCase path in the stack config and in the chart's values
    kind: Literal["int", "float", "str"]
    optional: bool = False  # unset in the stack: the variable is left out (the wrapper's default holds)

    def format(self, value: float | str) -> str:
        if self.kind == "str":
            return str(value)
        return str(int(value)) if self.kind == "int" else f"{float(value):g}"


# What every target passes to the wrapper as the stack sets it, in the order the objects list them.
STACK_SETTINGS = (
    Setting(DEFAULT_MAX_TOKENS, "wrapper.defaultMaxTokens", "int"),
    Setting(DEFAULT_TEMPERATURE, "wrapper.defaultTemperature", "float"),
    Setting(MAX_RETRIES, "wrapper.maxRetries", "int"),
    Setting(TIMEOUT, "wrapper.timeout", "int"),
    Setting(MAX_N, "wrapper.limits.maxN", "int", optional=True),
    Setting(MAX_COMPLETION_TOKENS, "wrapper.limits.maxCompletionTokens", "int", optional=True),
    Setting(MAX_PROMPT_CHARS, "wrapper.limits.maxPromptChars", "int", optional=True),
    Setting(RATE_LIMIT_REQUESTS, "wrapper.limits.rateLimitRequests", "int", optional=True),
    Setting(RATE_LIMIT_TOKENS, "wrapper.limits.rateLimitTokens", "int", optional=True),
    Setting(ROUTING, "wrapper.routing", "str", optional=True),
    Setting(STREAM_KEEPALIVE_AFTER, "wrapper.streamKeepaliveAfter", "int", optional=True),
    Setting(STREAM_KEEPALIVE_INTERVAL, "wrapper.streamKeepaliveInterval", "int", optional=True),
)
# Scale-to-zero on Kubernetes, with the StatefulSet's namespace and name (K8S_*) after them.
SCALER_SETTINGS = (
    Setting(IDLE_TIMEOUT, "idleTimeout", "int"),
    Setting(WAKE_TIMEOUT, "wrapper.wakeTimeout", "int"),
    Setting(K8S_REPLICAS, "vllm.replicas", "int"),  # what a wake from zero brings back
)
# Autoscaling between vllm.replicas {min, max} (Kubernetes; with the K8S_* names, only when a range is set).
AUTOSCALE_SETTINGS = (
    Setting(AUTOSCALE_MIN, "vllm.autoscale.minReplicas", "int"),
    Setting(AUTOSCALE_MAX, "vllm.autoscale.maxReplicas", "int"),
    Setting(AUTOSCALE_TARGET_IN_FLIGHT, "vllm.autoscale.targetInFlight", "float"),
    Setting(AUTOSCALE_WINDOW, "vllm.autoscale.window", "int"),
    Setting(AUTOSCALE_SCALE_DOWN_DELAY, "vllm.autoscale.scaleDownDelay", "int"),
    Setting(AUTOSCALE_DRAIN_TIMEOUT, "vllm.shutdownTimeout", "int"),  # vLLM drains the rest on SIGTERM
)
