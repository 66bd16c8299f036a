"""The Helm values that make `charts/vllm-deploy` declare the objects `pulumi up` declares.

Built from the typed `StackConfig` (the one source of truth), with the stack config's own
key names: each section is dumped as the stack file spells it, so a field added to the config
but unknown to the chart fails the chart's schema (`additionalProperties: false`) instead of
being dropped silently. What the chart cannot derive by itself (it does not know model sizes)
is passed as plain numbers: `vllm.startupTimeout` and `kubernetes.cache.size`.

Secrets never enter the values. Two ways to handle the `<release>-secrets` Secret:

- ``"existing"`` (the default, and the recommended path): `secrets.existingSecret` names the
  Secret that manifests.py names, created outside Helm; the chart declares no Secret.
- ``"placeholders"``: `secrets.create: true` with the `REDACTED` mark for each secret the stack
  sets, so the chart declares the same Secret `vllm-deploy render` prints (keys, no values).
  For review and for the parity test; replace the placeholders before installing.
"""

from __future__ import annotations

from typing import Any, Literal

import yaml

from components import manifests
from components.config import StackConfig
from components.manifests import REDACTED
from components.plan import serving_plan
from components.secrets import SECRET_ENV

SecretsMode = Literal["existing", "placeholders"]
CHART_PATH = "charts/vllm-deploy"


def _dump(section: Any) -> dict[str, Any]:
    return section.model_dump(by_alias=True, exclude_none=True, mode="json")


def _g(number: float) -> float:
    """The float manifests.py formats with `:g`, so the chart's `toString` prints the same digits."""
    return float(f"{number:g}")


def helm_values(config: StackConfig, secrets: SecretsMode = "existing") -> dict[str, Any]:
    """The values file that reproduces `config` (a Kubernetes stack) with the chart."""
    if config.target != "kubernetes":
        raise ValueError(f"the Helm chart deploys to Kubernetes; this stack targets {config.target}")
    n, plan = manifests.names(config), serving_plan(config)
    vllm = _dump(config.vllm) | {
        "gpuMemoryUtilization": _g(config.vllm.gpu_memory_utilization),
        # Derived from the model's size when the stack does not set it.
        "startupTimeout": plan.startup_budget_seconds,
    }
    if (autoscale := config.vllm.autoscale) is not None:
        # The stack's `vllm.replicas: {min, max}`, under the keys the chart reads (vllm.replicas
        # is then max(min, 1), as the chart requires).
        vllm["autoscale"] = _dump(autoscale) | {"targetInFlight": _g(autoscale.target_in_flight)}
    wrapper = _dump(config.wrapper) | {"defaultTemperature": _g(config.wrapper.default_temperature)}
    kubernetes = _dump(config.kubernetes)
    # Left out, as are `target` and the `modal` and `cost` sections: where Pulumi deploys
    # (Helm takes --kube-context).
    kubernetes.pop("context", None)
    kubernetes["cache"] = kubernetes.get("cache", {}) | {"size": plan.cache_size}
    if secrets == "existing":
        secret_values: dict[str, Any] = {"create": False, "existingSecret": n.secret}
        # The Secret is created before the release, so its namespace must already exist;
        # Helm would refuse to adopt a Namespace it did not create.
        kubernetes["createNamespace"] = False
    elif secrets == "placeholders":
        secret_values = {
            "create": True,
            **{key: REDACTED for key in sorted(config.secrets_present) if key in SECRET_ENV},
        }
    else:
        raise ValueError(f"secrets: {secrets!r} is neither 'existing' nor 'placeholders'")
    values: dict[str, Any] = {
        "model": _dump(config.model) | {"servedName": config.model.name},
        "gpu": _dump(config.gpu),
        "idleTimeout": config.idle_timeout,
        "vllm": vllm,
        "wrapper": wrapper,
        "kubernetes": kubernetes,
        "secrets": secret_values,
    }
    if config.observability.model_dump(exclude_defaults=True):  # the chart's defaults are the config's
        values["observability"] = config.observability.model_dump(by_alias=True, mode="json")
    return values


def values_yaml(config: StackConfig, secrets: SecretsMode = "existing", stack: str = "") -> str:
    """`helm_values` as a commented YAML file: how to install it, and where the secrets go."""
    n = manifests.names(config)
    source = f" from stacks/Pulumi.{stack}.yaml" if stack else ""
    head = [
        f"# vllm-deploy chart values{source}: the objects `pulumi up` declares for this stack.",
        f"# helm upgrade --install {n.release} {CHART_PATH} -n {n.namespace} -f values.yaml",
        "# kubernetes.releaseName and kubernetes.namespace pin that release name and namespace.",
    ]
    if secrets == "existing":
        keys = [SECRET_ENV["vllmApiKey"]] + ([SECRET_ENV["hfToken"]] if config.model.gated else [])
        head += [
            f"# Secrets stay out of values: create the namespace and the Secret {n.secret} first,",
            "# from a file of KEY=value lines (never type keys on a command line), e.g.",
            f"#   kubectl create namespace {n.namespace}",
            f"#   kubectl create secret generic {n.secret} -n {n.namespace} --from-env-file=secrets.env",
            f"# with {', '.join(keys)} in secrets.env (add {SECRET_ENV['wrapperApiKey']} to make clients send a Bearer key).",
        ]
    else:
        head.append(f"# secrets.* hold {REDACTED!r} placeholders: replace them before installing.")
    body = yaml.safe_dump(helm_values(config, secrets), sort_keys=False, default_flow_style=False)
    return "\n".join(head) + "\n" + body
