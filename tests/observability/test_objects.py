"""The observability objects: strictly valid, the chart declares the same ones, checkov passes."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from components import manifests, observability
from components.helm_values import helm_values
from components.observability import ObservabilityConfig
from components.config import parse_stack_config
from components.stackfile import load_stack, read_raw
from tests.helm.chart import differences, identity, normalise, render_stack

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
KUBERNETES_VERSIONS = ("1.36.0", "1.37.0")
CRD_KINDS = {"PodMonitor": "podmonitor-v1.json", "PrometheusRule": "prometheusrule-v1.json"}

OPERATOR = ObservabilityConfig.model_validate(
    {
        "enabled": True,
        "prometheusOperator": True,
        "monitorLabels": {"release": "kube-prometheus-stack"},
        "scrapeInterval": 15,
        "scraperNamespaceSelector": {"kubernetes.io/metadata.name": "observability"},
        "scraperPodSelector": {"app.kubernetes.io/name": "prometheus"},
        "dashboard": {"configMap": True, "namespace": "grafana"},
        "alerts": {"ttftP95Seconds": 1.5, "idleHours": 6},
    }
)
ANNOTATIONS = ObservabilityConfig.model_validate({"enabled": True})
CONFIGS = {"operator": OPERATOR, "annotations": ANNOTATIONS}


def _strict(schema: Any) -> Any:
    """The CRD's structural schema with unknown fields forbidden, as `kubectl apply --validate=strict`
    treats them (the API server would prune them silently otherwise)."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    if (
        out.get("type") == "object"
        and "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def crd_validator(kind: str) -> jsonschema.Validator:
    fixture = json.loads((HERE / "crds" / CRD_KINDS[kind]).read_text())
    schema = _strict(fixture["openAPIV3Schema"])
    return jsonschema.Draft7Validator(schema)


def validate(obj: dict) -> None:
    if obj["kind"] in CRD_KINDS:
        errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in crd_validator(obj["kind"]).iter_errors(obj)]
        assert errors == [], f"{identity(obj)}: {errors}"
        meta = obj["metadata"]
        assert set(meta) <= {"name", "namespace", "labels", "annotations"}
        assert all(isinstance(v, str) for v in meta.get("labels", {}).values())
        return
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(obj, version, strict=True)


def objects(config_name: str, stack: str = "dev") -> list[dict]:
    return observability.build(CONFIGS[config_name], observability.release_of(load_stack(stack)))


@pytest.mark.parametrize("config_name", sorted(CONFIGS))
def test_every_object_is_strictly_valid(config_name: str) -> None:
    objs = objects(config_name)
    assert objs
    for obj in objs:
        validate(obj)


def test_strict_crd_validation_catches_a_misspelt_field() -> None:
    (monitor, *_) = objects("operator")
    monitor["spec"]["podMetricsEndpoints"][0]["intervall"] = "15s"
    with pytest.raises(AssertionError, match="intervall"):
        validate(monitor)


def test_with_the_operator_pod_monitors_a_rule_a_policy_and_the_dashboard() -> None:
    objs = objects("operator")
    assert [(o["kind"], o["metadata"]["name"]) for o in objs] == [
        ("PodMonitor", "vllm"),
        ("PodMonitor", "vllm-wrapper"),
        ("PrometheusRule", "vllm"),
        ("NetworkPolicy", "vllm-metrics"),
        ("ConfigMap", "vllm-dashboard"),
    ]
    vllm_monitor, wrapper_monitor, rule, policy, dashboard = objs
    config = load_stack("dev")
    assert vllm_monitor["spec"]["selector"]["matchLabels"] == manifests.selector(config, "vllm")
    assert wrapper_monitor["spec"]["selector"]["matchLabels"] == manifests.selector(config, "wrapper")
    assert vllm_monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert vllm_monitor["spec"]["podMetricsEndpoints"][0] | {"relabelings": None} == {
        "port": "http", "path": "/metrics", "interval": "15s", "relabelings": None,
    }
    # The pod's labels (app.kubernetes.io/component...) become the series labels the rules select on.
    assert {"action": "labelmap", "regex": "__meta_kubernetes_pod_label_(.+)"} in vllm_monitor["spec"]["podMetricsEndpoints"][0]["relabelings"]
    assert policy["spec"]["podSelector"]["matchLabels"] == manifests.selector(config, "vllm")
    assert policy["spec"]["ingress"] == [
        {
            "from": [
                {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "observability"}},
                    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
                }
            ],
            "ports": [{"protocol": "TCP", "port": manifests.VLLM_PORT}],
        }
    ]
    assert dashboard["metadata"]["namespace"] == "grafana"
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["vllm-deploy.json"])["uid"] == "vllm-deploy"


def test_configured_thresholds_land_in_the_alerts() -> None:
    rule = next(o for o in objects("operator") if o["kind"] == "PrometheusRule")
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}
    assert alerts["VllmTimeToFirstTokenHigh"]["expr"].endswith("> 1.5")
    assert alerts["VllmIdleWhileUp"]["for"] == "6h"
    # dev's wrapper holds requests up to wakeTimeout (600 s): waking longer than that is stuck.
    assert load_stack("dev").wrapper.wake_timeout == 600
    assert alerts["VllmStuckWaking"]["for"] == "600s"
    defaults = yaml.safe_load(observability.RULES_FILE.read_text())["groups"]
    assert observability.rule_groups(ObservabilityConfig(), wake_timeout=0)[0]["rules"][5]["for"] == "60s"
    assert [r["alert"] for r in defaults[0]["rules"]] == [r["alert"] for r in rule["spec"]["groups"][0]["rules"]]


def test_without_the_operator_annotated_services_and_the_policy() -> None:
    objs = objects("annotations")
    assert [(o["kind"], o["metadata"]["name"]) for o in objs] == [
        ("Service", "vllm-metrics"),
        ("Service", "vllm-wrapper-metrics"),
        ("NetworkPolicy", "vllm-metrics"),
    ]
    vllm_svc, wrapper_svc, _ = objs
    assert vllm_svc["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true", "prometheus.io/port": "8000",
        "prometheus.io/path": "/metrics", "prometheus.io/scheme": "http",
    }
    assert wrapper_svc["metadata"]["annotations"]["prometheus.io/port"] == str(load_stack("dev").wrapper.port)
    assert vllm_svc["metadata"]["labels"]["app.kubernetes.io/component"] == "vllm"
    assert vllm_svc["spec"]["clusterIP"] == "None"


def test_disabled_adds_nothing() -> None:
    assert observability.build(ObservabilityConfig(), observability.release_of(load_stack("dev"))) == []


def test_a_misspelt_key_is_refused_with_its_name() -> None:
    with pytest.raises(ValueError, match="prometheusOperater"):
        ObservabilityConfig.model_validate({"prometheusOperater": True})


@pytest.mark.parametrize("config_name", sorted(CONFIGS))
@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_chart_declares_the_same_objects(chart, config_name: str, stack: str) -> None:
    config = load_stack(stack)
    values = helm_values(config, "placeholders")
    values["observability"] = CONFIGS[config_name].model_dump(by_alias=True, mode="json")
    rendered = render_stack(chart, values, config)
    ours = observability.build(CONFIGS[config_name], observability.release_of(config))
    wanted = {identity(o) for o in ours}
    others = normalise(manifests.build(config).all())
    assert differences(normalise([o for o in rendered if identity(o) in wanted]), normalise(ours)) == []
    # Nothing else changes: the rest of the chart is still what manifests.py declares.
    assert differences(normalise([o for o in rendered if identity(o) not in wanted]), others) == []


def test_checkov_passes_the_objects(tmp_path: Path, checkov_bin: Path) -> None:  # the fixture marks it `checkov`
    config = load_stack("dev")
    for name, obs in CONFIGS.items():
        objs = manifests.build(config).all() + observability.build(obs, observability.release_of(config))
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump_all(objs))
    result = subprocess.run(
        [str(checkov_bin), "-d", str(tmp_path), "--framework", "kubernetes", "--skip-download", "-o", "json"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true", "BC_SKIP_MAPPING": "TRUE"},
    )
    report = json.loads(result.stdout)
    failed = [f"{c['check_id']} {c['resource']}: {c['check_name']}" for c in report["results"]["failed_checks"]]
    assert failed == []
    assert report["summary"]["parsing_errors"] == 0


def test_the_pulumi_program_declares_the_observability_objects_render_prints() -> None:
    """`observability` in a stack file reaches `pulumi up` unchanged: Prometheus Operator's kinds
    as custom resources (they are not in pulumi-kubernetes' typed SDK), under one component."""
    from tests.infra.pulumi_harness import run_program

    section = {"enabled": True, "prometheusOperator": True, "monitorLabels": {"release": "kube-prometheus"},
               "dashboard": {"configMap": True}}
    declared = run_program("dev", overrides={"observability": section})
    config = parse_stack_config({**read_raw("dev"), "observability": section}, require_secrets=False)
    expected = observability.build(config.observability, observability.release_of(config))
    custom = [d for d in declared if d.typ.startswith("kubernetes:monitoring.coreos.com/v1:")]
    assert sorted(d.kind for d in custom) == ["PodMonitor", "PodMonitor", "PrometheusRule"]
    for d in custom:
        want = next(o for o in expected if o["kind"] == d.kind and o["metadata"]["name"] == d.plain("metadata")["name"])
        assert d.plain("spec") == want["spec"] and d.plain("metadata")["labels"] == want["metadata"]["labels"]
    assert any(d.kind == "ConfigMap" for d in declared)
    assert any(d.typ == "vllm-deploy:kubernetes:Monitoring" for d in declared)
    assert not [d for d in run_program("dev") if d.typ == "vllm-deploy:kubernetes:Monitoring"]  # off by default
