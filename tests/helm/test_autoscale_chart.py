"""`vllm.autoscale` in the chart: the stack's `vllm.replicas: {min, max}`, validated as
components/config.py validates it, and rendered as manifests.py renders it (parity itself:
the `autoscale-*` variants of tests/helm/test_parity.py)."""

from __future__ import annotations

import copy
import re

import helm_python
import pytest
import yaml

from components import manifests, wrapper_env
from components.config import AutoscaleConfig, ConfigError, parse_stack_config
from components.helm_values import helm_values
from tests.helm.chart import CHART_DIR, MINIMAL, objects, render


def ranged(autoscale: dict, **top) -> dict:
    values = copy.deepcopy(MINIMAL) | top
    values["vllm"] = {"autoscale": autoscale, **top.get("vllm", {})}
    return values


def wrapper_env_of(objs: list[dict]) -> dict[str, str]:
    (deployment,) = [o for o in objs if o["kind"] == "Deployment"]
    return {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}


def statefulset_of(objs: list[dict]) -> dict:
    (statefulset,) = [o for o in objs if o["kind"] == "StatefulSet"]
    return statefulset


def test_the_charts_autoscale_defaults_are_the_stack_configs():
    """A hand-written values file that sets only minReplicas and maxReplicas gets the stack's defaults."""
    stack_defaults = AutoscaleConfig(min_replicas=1, max_replicas=2).model_dump(by_alias=True, mode="json")
    defaults = yaml.safe_load((CHART_DIR / "values.yaml").read_text())["vllm"]["autoscale"]
    assert defaults == stack_defaults | {"minReplicas": None, "maxReplicas": None}


def test_without_a_range_nothing_autoscales(chart):
    objs = objects(render(chart, MINIMAL, "vllm", "vllm"))
    assert not {s.variable for s in wrapper_env.AUTOSCALE_SETTINGS} & wrapper_env_of(objs).keys()
    assert statefulset_of(objs)["spec"]["replicas"] == 1
    assert not [o for o in objs if o["kind"] == "Role"]


def test_a_range_gets_the_scaler_and_routes_over_every_pod_up_to_max(chart):
    objs = objects(render(chart, ranged({"minReplicas": 1, "maxReplicas": 3}), "llm", "ai"))
    env = wrapper_env_of(objs)
    assert env[wrapper_env.BASE_URL] == ",".join(
        f"http://llm-{i}.llm-headless.ai.svc.cluster.local:8000/v1" for i in range(3)
    )
    assert {k: env[k] for k in (s.variable for s in wrapper_env.AUTOSCALE_SETTINGS)} == {
        "VLLM_AUTOSCALE_MIN": "1",
        "VLLM_AUTOSCALE_MAX": "3",
        "VLLM_AUTOSCALE_TARGET_IN_FLIGHT": "8",
        "VLLM_AUTOSCALE_WINDOW": "10",
        "VLLM_AUTOSCALE_SCALE_DOWN_DELAY": "300",
        "VLLM_AUTOSCALE_DRAIN_TIMEOUT": "30",
    }
    # The wrapper owns the count: an upgrade must not reset what it scaled to.
    assert "replicas" not in statefulset_of(objs)["spec"]
    assert {o["kind"] for o in objs} >= {"ServiceAccount", "Role", "RoleBinding", "Lease"}


def test_values_from_a_ranged_stack_carry_the_range_under_the_charts_keys():
    raw = {
        "model": {"id": "org/model"},
        "vllm": {"replicas": {"min": 2, "max": 5}, "autoscale": {"targetInFlight": 2.5}},
    }
    values = helm_values(parse_stack_config(raw, require_secrets=False))
    assert values["vllm"]["replicas"] == 2
    assert values["vllm"]["autoscale"] == {
        "minReplicas": 2,
        "maxReplicas": 5,
        "targetInFlight": 2.5,
        "window": 10,
        "scaleDownDelay": 300,
    }


@pytest.mark.parametrize(
    ("values", "where", "says"),
    [
        (ranged({"minReplicas": 1, "maxReplicas": 3, "window": 16}), "/vllm/autoscale/window", "maximum"),
        (ranged({"minReplicas": 1, "maxReplicas": 3, "window": 0}), "/vllm/autoscale/window", "minimum"),
        (ranged({"minReplicas": 1, "maxReplicas": 3, "targetInFlight": 0}), "/vllm/autoscale/targetInFlight", "exclusiveMinimum"),
        (ranged({"minReplicas": -1, "maxReplicas": 3}), "/vllm/autoscale/minReplicas", "minimum"),
        (ranged({"minReplicas": 0, "maxReplicas": 0}), "/vllm/autoscale/maxReplicas", "minimum"),
        (ranged({"minReplicas": 1, "maxReplicas": 3, "target": 4}), "/vllm/autoscale", "additional properties 'target'"),
    ],
)  # fmt: skip
def test_the_schema_bounds_the_range_as_the_stack_config_does(chart, values, where, says):
    with pytest.raises(helm_python.HelmValuesError) as error:
        render(chart, values, "vllm", "vllm")
    assert f"at '{where}'" in str(error.value) and says in str(error.value)


@pytest.mark.parametrize(
    ("values", "says"),
    [
        (ranged({"maxReplicas": 3}), "vllm.autoscale: set both minReplicas and maxReplicas"),
        (ranged({"minReplicas": 3, "maxReplicas": 2}), "vllm.autoscale.maxReplicas: 2 is below vllm.autoscale.minReplicas 3"),
        (ranged({"minReplicas": 0, "maxReplicas": 2}), "vllm.autoscale.minReplicas: 0 scales to zero, which needs an idleTimeout"),
        (ranged({"minReplicas": 1, "maxReplicas": 2}, idleTimeout=600), "idleTimeout: scales to zero, below vllm.autoscale.minReplicas 1"),
        (ranged({"minReplicas": 2, "maxReplicas": 4}), "vllm.replicas: with vllm.autoscale it is the count"),
    ],
)  # fmt: skip
def test_the_templates_refuse_the_ranges_the_stack_config_refuses(chart, values, says):
    with pytest.raises(helm_python.HelmRenderError, match=re.escape(says)):
        render(chart, values, "vllm", "vllm")


@pytest.mark.parametrize(
    ("vllm", "top", "key"),
    [
        ({"replicas": {"min": 3, "max": 2}}, {}, "vllm.replicas.max"),
        ({"replicas": {"min": 0, "max": 2}}, {"idleTimeout": "never"}, "vllm.replicas.min"),
        ({"replicas": {"min": 1, "max": 2}}, {"idleTimeout": "10m"}, "idleTimeout"),
    ],
)
def test_the_same_ranges_fail_in_the_stack_config_first(vllm, top, key):
    """What `vllm-deploy values` refuses before the chart sees it (so the two messages agree on the key)."""
    with pytest.raises(ConfigError, match=re.escape(key)):
        parse_stack_config({"model": {"id": "org/model"}, "vllm": vllm, **top}, require_secrets=False)


def test_a_range_that_scales_to_zero_renders_the_notes_and_the_pulumi_replica_count(chart):
    config = parse_stack_config(
        {"model": {"id": "org/model"}, "idleTimeout": "5m", "vllm": {"replicas": {"min": 0, "max": 2}}},
        require_secrets=False,
    )
    rendered = render(chart, helm_values(config), "vllm", "vllm")
    notes = next(text for path, text in rendered.items() if path.endswith("NOTES.txt"))
    assert "between 0 and 2 replicas" in notes
    env = wrapper_env_of(objects(rendered))
    # What a wake from zero brings back: max(min, 1), the StatefulSet's count on the Pulumi side.
    pulumi = statefulset_of(manifests.build(config).all())
    assert env[wrapper_env.K8S_REPLICAS] == str(pulumi["spec"]["replicas"]) == "1"
