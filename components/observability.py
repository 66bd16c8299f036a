"""Letting Prometheus and Grafana see a release: scrape objects, alert rules, the dashboard.

Pure functions from an :class:`ObservabilityConfig` (the stack's ``observability`` section, the
chart's ``observability`` values) and a :class:`Release` (names, labels and ports the existing
manifests use) to camelCase manifest dicts, like ``components/manifests.py``:

* ``prometheusOperator: true``: a PodMonitor each for vLLM and the wrapper (labels the user sets,
  to match their Prometheus' ``podMonitorSelector``) and a PrometheusRule from
  ``charts/vllm-deploy/rules/vllm-deploy.rules.yaml``;
* otherwise: a headless Service each, annotated with the conventional ``prometheus.io/*`` keys
  that annotation-driven scrape configs (``kubernetes-service-endpoints``) look for;
* always: a NetworkPolicy letting the scraper's namespace reach vLLM's port (vLLM's own policy
  admits the wrapper only; the wrapper's port is open to every client already), and optionally
  the dashboard as a ConfigMap with the Grafana sidecar's label.

PodMonitors, not ServiceMonitors: vLLM has two Services over the same pods (the headless one and
the ClusterIP one), so a label-selected ServiceMonitor would scrape every pod twice.

The dashboard and the rules select targets by the pod labels as Prometheus' ``labelmap`` names
them (``app_kubernetes_io_component="vllm"``): the PodMonitors map them, and the annotation-driven
scrape configs of the community Prometheus chart do too.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

Manifest = dict[str, Any]

CHART_DIR = Path(__file__).resolve().parents[1] / "charts" / "vllm-deploy"
DASHBOARD_FILE = CHART_DIR / "dashboards" / "vllm-deploy.json"
RULES_FILE = CHART_DIR / "rules" / "vllm-deploy.rules.yaml"
DASHBOARD_KEY = "vllm-deploy.json"
METRICS_PATH = "/metrics"
COMPONENT = "monitoring"  # app.kubernetes.io/component of the objects made here
# Copies the pod's labels onto its series, as `labelmap` in annotation-driven scrape configs does.
POD_LABELMAP = {"action": "labelmap", "regex": "__meta_kubernetes_pod_label_(.+)"}

# The alerts whose thresholds come from configuration, and the defaults the rules file holds.
TTFT_ALERT = "VllmTimeToFirstTokenHigh"
WAKING_ALERT = "VllmStuckWaking"
IDLE_ALERT = "VllmIdleWhileUp"
MIN_WAKING_SECONDS = 60  # a wake timeout of 0 (answer 503 at once) still allows a wake a minute
_THRESHOLD = re.compile(r">\s*[0-9.]+\s*$")


class _Section(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class AlertSettings(_Section):
    ttft_p95_seconds: float = Field(default=2.0, gt=0, description="objective for vLLM's p95 time to first token")
    idle_hours: int = Field(
        default=3, ge=1, le=720, description="hours without a request, replicas up, before an alert"
    )


class DashboardSettings(_Section):
    config_map: bool = Field(default=False, description="deliver the dashboard as a ConfigMap for Grafana's sidecar")
    labels: dict[str, str] = Field(default_factory=lambda: {"grafana_dashboard": "1"})
    namespace: str | None = Field(default=None, description="the ConfigMap's namespace (default: the release's)")


class ObservabilityConfig(_Section):
    """The ``observability`` section of a stack file and of the chart's values."""

    enabled: bool = False
    prometheus_operator: bool = Field(default=False, description="PodMonitors and a PrometheusRule (CRDs needed)")
    monitor_labels: dict[str, str] = Field(default_factory=dict, description="labels on PodMonitors and PrometheusRule")
    scrape_interval: int = Field(default=30, ge=1, le=3600, description="seconds between scrapes")
    scraper_namespace_selector: dict[str, str] = Field(
        default_factory=lambda: {"kubernetes.io/metadata.name": "monitoring"}, min_length=1
    )
    scraper_pod_selector: dict[str, str] = Field(default_factory=dict, description="empty: any pod of that namespace")
    dashboard: DashboardSettings = Field(default_factory=DashboardSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)


@dataclass(frozen=True)
class Release:
    """What the existing manifests decide and these objects must agree with."""

    name: str
    namespace: str
    labels: dict[str, dict[str, str]]  # component ("vllm", "wrapper", COMPONENT) -> object labels
    selectors: dict[str, dict[str, str]]  # component -> pod selector labels
    vllm_port: int
    wrapper_port: int
    wake_timeout: int  # seconds a request waits for a woken vLLM (the wrapper's VLLM_WAKE_TIMEOUT)


def release_of(config: Any) -> Release:
    """A :class:`Release` from a stack's ``StackConfig``, with manifests.py's names and labels."""
    from components import manifests  # the adapter alone depends on the manifests module

    components = ("vllm", "wrapper", COMPONENT)
    return Release(
        name=config.kubernetes.release_name,
        namespace=config.kubernetes.namespace,
        labels={c: manifests.labels(config, c) for c in components},
        selectors={c: manifests.selector(config, c) for c in components},
        vllm_port=manifests.VLLM_PORT,
        wrapper_port=config.wrapper.port,
        wake_timeout=config.wrapper.wake_timeout,
    )


# ------------------------------------------------------------------ shared files


def dashboard_json() -> str:
    """The dashboard exactly as the repository holds it (the chart ships the same bytes)."""
    return DASHBOARD_FILE.read_text()


def rule_groups(obs: ObservabilityConfig, wake_timeout: int) -> list[Manifest]:
    """The rules file's groups with the configured thresholds in place."""
    groups = copy.deepcopy(yaml.safe_load(RULES_FILE.read_text())["groups"])
    waking_for = f"{max(wake_timeout, MIN_WAKING_SECONDS)}s"
    for group in groups:
        for rule in group["rules"]:
            name = rule.get("alert")
            if name == TTFT_ALERT:
                expr, n = _THRESHOLD.subn(f"> {obs.alerts.ttft_p95_seconds:g}", rule["expr"])
                if n != 1:  # the rules file changed shape: fail here, not in a silent alert
                    raise ValueError(f"{RULES_FILE.name}: {TTFT_ALERT} must end in '> <seconds>'")
                rule["expr"] = expr
            elif name == WAKING_ALERT:
                rule["for"] = waking_for
            elif name == IDLE_ALERT:
                rule["for"] = f"{obs.alerts.idle_hours}h"
    return groups


# ----------------------------------------------------------------------- objects


def _metadata(release: Release, name: str, component: str, extra_labels: dict[str, str] | None = None) -> Manifest:
    return {
        "name": name,
        "namespace": release.namespace,
        "labels": {**release.labels[component], **(extra_labels or {})},
    }


def pod_monitor(obs: ObservabilityConfig, release: Release, component: str) -> Manifest:
    """Scrapes the `http` port's /metrics of every pod of `component` ("vllm" or "wrapper")."""
    name = release.name if component == "vllm" else f"{release.name}-{component}"
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": _metadata(release, name, COMPONENT, obs.monitor_labels),
        "spec": {
            "selector": {"matchLabels": dict(release.selectors[component])},
            "podMetricsEndpoints": [
                {
                    "port": "http",
                    "path": METRICS_PATH,
                    "interval": f"{obs.scrape_interval}s",
                    "relabelings": [dict(POD_LABELMAP)],
                }
            ],
        },
    }


def prometheus_rule(obs: ObservabilityConfig, release: Release) -> Manifest:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": _metadata(release, release.name, COMPONENT, obs.monitor_labels),
        "spec": {"groups": rule_groups(obs, release.wake_timeout)},
    }


def scrape_annotations(port: int) -> dict[str, str]:
    """The conventional keys annotation-driven scrape configs read (values are strings)."""
    return {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(port),
        "prometheus.io/path": METRICS_PATH,
        "prometheus.io/scheme": "http",
    }


def metrics_service(release: Release, component: str) -> Manifest:
    """A headless Service that only tells an annotation-driven Prometheus where to scrape."""
    port = release.vllm_port if component == "vllm" else release.wrapper_port
    base = release.name if component == "vllm" else f"{release.name}-{component}"
    metadata = _metadata(release, f"{base}-metrics", component)
    metadata["annotations"] = scrape_annotations(port)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {
            "clusterIP": "None",
            "selector": dict(release.selectors[component]),
            "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def scrape_network_policy(obs: ObservabilityConfig, release: Release) -> Manifest:
    """The scraper's namespace (and pods, if set) may reach vLLM's port; policies add up."""
    peer: Manifest = {"namespaceSelector": {"matchLabels": dict(obs.scraper_namespace_selector)}}
    if obs.scraper_pod_selector:
        peer["podSelector"] = {"matchLabels": dict(obs.scraper_pod_selector)}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(release, f"{release.name}-metrics", "vllm"),
        "spec": {
            "podSelector": {"matchLabels": dict(release.selectors["vllm"])},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [peer], "ports": [{"protocol": "TCP", "port": release.vllm_port}]}],
        },
    }


def dashboard_config_map(obs: ObservabilityConfig, release: Release) -> Manifest:
    metadata = _metadata(release, f"{release.name}-dashboard", COMPONENT, obs.dashboard.labels)
    if obs.dashboard.namespace:
        metadata["namespace"] = obs.dashboard.namespace
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": {DASHBOARD_KEY: dashboard_json()}}


def build(obs: ObservabilityConfig, release: Release) -> list[Manifest]:
    """Every observability object of a release (none unless `enabled`)."""
    if not obs.enabled:
        return []
    if obs.prometheus_operator:
        objects = [
            pod_monitor(obs, release, "vllm"),
            pod_monitor(obs, release, "wrapper"),
            prometheus_rule(obs, release),
        ]
    else:
        objects = [metrics_service(release, "vllm"), metrics_service(release, "wrapper")]
    objects.append(scrape_network_policy(obs, release))
    if obs.dashboard.config_map:
        objects.append(dashboard_config_map(obs, release))
    return objects


def dashboard_model() -> dict[str, Any]:
    """The dashboard parsed (for tests and the renderer)."""
    return json.loads(dashboard_json())


def dashboard_queries(
    dashboard: dict[str, Any], *, namespace: str, model: str, rate_interval: str, time_range: str
) -> list[tuple[dict[str, Any], dict[str, Any], str]]:
    """(panel, target, PromQL) for every panel target, with the variables as Grafana fills them:
    ``$namespace`` / ``$model`` (regex matchers), ``$__rate_interval`` and ``$__range``."""
    values = {
        "$__rate_interval": rate_interval,
        "$__range": time_range,
        "$namespace": namespace,
        "$model": model,
    }
    found = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", ()):
            expr = target["expr"]
            for name, value in values.items():
                expr = expr.replace(name, value)
            found.append((panel, target, expr))
    return found


__all__ = [
    "AlertSettings",
    "DashboardSettings",
    "ObservabilityConfig",
    "Release",
    "build",
    "dashboard_config_map",
    "dashboard_json",
    "dashboard_model",
    "dashboard_queries",
    "metrics_service",
    "pod_monitor",
    "prometheus_rule",
    "release_of",
    "rule_groups",
    "scrape_annotations",
    "scrape_network_policy",
]
