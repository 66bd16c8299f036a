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

# The bound wrapper/settings.py puts on VLLM_MAX_RETRIES; the stack config accepts the same range.
MAX_RETRIES_LIMIT = 20
# Where the wrapper listens inside a container (all interfaces; the port is the stack's).
LISTEN_HOST = "0.0.0.0"


@dataclass(frozen=True)
class Setting:
    """A wrapper setting copied from one stack key; the chart reads the value of the same name."""

    variable: str
    key: str  # dotted camelCase path in the stack config and in the chart's values
    kind: Literal["int", "float"]

    def format(self, value: float) -> str:
        return str(int(value)) if self.kind == "int" else f"{value:g}"


# What every target passes to the wrapper as the stack sets it, in the order the objects list them.
STACK_SETTINGS = (
    Setting(DEFAULT_MAX_TOKENS, "wrapper.defaultMaxTokens", "int"),
    Setting(DEFAULT_TEMPERATURE, "wrapper.defaultTemperature", "float"),
    Setting(MAX_RETRIES, "wrapper.maxRetries", "int"),
    Setting(TIMEOUT, "wrapper.timeout", "int"),
)
# Scale-to-zero on Kubernetes, with the StatefulSet's namespace and name (K8S_*) after them.
SCALER_SETTINGS = (
    Setting(IDLE_TIMEOUT, "idleTimeout", "int"),
    Setting(WAKE_TIMEOUT, "wrapper.wakeTimeout", "int"),
)
