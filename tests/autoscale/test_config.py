"""`vllm.replicas: {min, max}` and `vllm.autoscale.*`: validated before anything is deployed, and
rendered into exactly what the wrapper's autoscaler reads (same RBAC as scale-to-zero)."""

from __future__ import annotations

import pytest

from components import manifests, wrapper_env
from components.config import ConfigError, parse_stack_config
from components.helm_values import helm_values
from components.kubernetes import statefulset_ignored_fields
from components.plan import serving_plan
from components.stackfile import read_raw
from wrapper.settings import Settings


def stack(vllm: dict, **top) -> dict:
    raw = read_raw("dev")
    return {**raw, **top, "vllm": {**(raw.get("vllm") or {}), **vllm}}


def objects(config) -> dict[tuple[str, str], dict]:
    return {(o["kind"], o["metadata"]["name"]): o for o in manifests.build(config).all()}


@pytest.mark.parametrize(
    ("vllm", "top", "error"),
    [
        (
            {"replicas": {"min": 0, "max": 3}},
            {"idleTimeout": "never"},
            "vllm.replicas.min: 0 scales to zero, which needs an idleTimeout (e.g. 15m); or use min: 1",
        ),
        (
            {"replicas": {"min": 1, "max": 3}},
            {},  # the dev stack sets idleTimeout 15m
            "idleTimeout: scales to zero, below vllm.replicas.min 1; use min: 0, or idleTimeout: never",
        ),
        (
            {"replicas": {"min": 3, "max": 2}},
            {},
            "vllm.replicas.max: 2 is below vllm.replicas.min 3; raise max or lower min",
        ),
        ({"replicas": {"min": 0}}, {}, "vllm.replicas.max: required, a whole number >= 1 (got None)"),
        ({"replicas": {"min": 0, "max": 2, "maximum": 4}}, {}, "vllm.replicas.maximum: unknown key; use min and max"),
        (
            {"replicas": 2, "autoscale": {"targetInFlight": 4}},
            {},
            "vllm.autoscale: applies only with vllm.replicas: {min, max}; set a range, or remove vllm.autoscale",
        ),
        (
            {"replicas": {"min": 0, "max": 2}, "autoscale": {"window": "1m"}},
            {},
            "vllm.autoscale.window: 1 s … 15 s: a scale-up is decided within 15 s of sustained demand",
        ),
        (
            {"replicas": {"min": 0, "max": 2}, "autoscale": {"targetInFlight": 0}},
            {},
            "vllm.autoscale.targetInFlight: Input should be greater than 0",
        ),
    ],
)
def test_a_wrong_range_fails_with_one_line_naming_the_key(vllm, top, error) -> None:
    with pytest.raises(ConfigError) as info:
        parse_stack_config(stack(vllm, **top), require_secrets=False)
    assert error in info.value.problems[0] and len(info.value.problems) == 1


def test_modal_stacks_are_told_where_their_range_lives() -> None:
    raw = read_raw("modal-dev")
    with pytest.raises(ConfigError, match=r"vllm.replicas: \{min, max\} autoscales on Kubernetes; on Modal set modal"):
        parse_stack_config({**raw, "vllm": {"replicas": {"min": 0, "max": 2}}}, require_secrets=False)


def test_a_range_renders_the_autoscalers_settings_and_the_same_narrow_role() -> None:
    fixed = parse_stack_config(stack({}), require_secrets=False)  # 1 replica, scale-to-zero
    config = parse_stack_config(
        stack({"replicas": {"min": 0, "max": 3}, "autoscale": {"targetInFlight": 6, "scaleDownDelay": "2m"}}),
        require_secrets=False,
    )
    assert config.vllm.replicas == 1 and config.vllm.max_replicas == 3
    objs = objects(config)
    sts = objs[("StatefulSet", "vllm")]
    assert sts["spec"]["replicas"] == 1  # starts with max(min, 1); a wake restores it too
    assert statefulset_ignored_fields(config) == ["spec.replicas"]  # `pulumi up` leaves the count alone
    deploy = objs[("Deployment", "vllm-wrapper")]
    env = {e["name"]: e.get("value") for e in deploy["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env[wrapper_env.AUTOSCALE_MIN] == "0" and env[wrapper_env.AUTOSCALE_MAX] == "3"
    assert env[wrapper_env.AUTOSCALE_TARGET_IN_FLIGHT] == "6"
    assert env[wrapper_env.AUTOSCALE_WINDOW] == "10" and env[wrapper_env.AUTOSCALE_SCALE_DOWN_DELAY] == "120"
    assert env[wrapper_env.AUTOSCALE_DRAIN_TIMEOUT] == str(config.vllm.shutdown_timeout)
    assert env[wrapper_env.K8S_REPLICAS] == "1"
    host = "vllm-headless.vllm-dev.svc.cluster.local:8000"
    assert env[wrapper_env.BASE_URL].split(",") == [f"http://vllm-{i}.{host}/v1" for i in range(3)]
    # The wrapper accepts what the stack renders (secrets aside).
    settings = Settings(**{k.removeprefix("VLLM_").lower(): v for k, v in env.items() if v is not None})
    assert (settings.autoscale_min, settings.autoscale_max, settings.autoscale_target_in_flight) == (0, 3, 6.0)
    # RBAC: exactly what scale-to-zero already has (get sts, get/patch its scale and the Lease, by name).
    assert objs[("Role", "vllm-scaler")] == objects(fixed)[("Role", "vllm-scaler")]
    assert ("Lease", "vllm-activity") in objs


def test_a_range_without_scale_to_zero_still_gets_the_scaler_role() -> None:
    config = parse_stack_config(stack({"replicas": {"min": 2, "max": 4}}, idleTimeout="never"), require_secrets=False)
    objs = objects(config)
    spec = objs[("Deployment", "vllm-wrapper")]["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == "vllm-scaler"
    env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    assert env[wrapper_env.IDLE_TIMEOUT] == "0" and env[wrapper_env.AUTOSCALE_MIN] == "2"
    assert objs[("StatefulSet", "vllm")]["spec"]["replicas"] == 2
    assert serving_plan(config).wrapper_scales


def test_an_integer_keeps_todays_fixed_count_and_no_autoscaler() -> None:
    config = parse_stack_config(stack({"replicas": 2}), require_secrets=False)
    env = {e["name"] for e in manifests.wrapper_env(config, serving_plan(config))}
    assert not {s.variable for s in wrapper_env.AUTOSCALE_SETTINGS} & env


def test_the_chart_declares_what_pulumi_declares_for_a_range() -> None:
    """`vllm-deploy values` of a ranged stack, rendered by the real Helm engine (as tests/helm does)."""
    import helm_python

    from tests.helm.chart import CHART_DIR, differences, normalise, render_stack

    config = parse_stack_config(
        stack({"replicas": {"min": 0, "max": 3}}), secrets_present={"vllmApiKey"}, require_secrets=False
    )
    with helm_python.Chart.load(CHART_DIR) as chart:
        rendered = render_stack(chart, helm_values(config, "placeholders"), config)
    assert differences(normalise(rendered), normalise(manifests.build(config).all())) == []
    wrapper = next(o for o in rendered if o["kind"] == "Deployment")
    env = {e["name"] for e in wrapper["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert {s.variable for s in wrapper_env.AUTOSCALE_SETTINGS} <= env


def test_the_cost_estimate_bills_max_replicas_always_on_and_min_kept_warm() -> None:
    from components.cost import estimate

    ranged = parse_stack_config(stack({"replicas": {"min": 1, "max": 3}}, idleTimeout="never"), require_secrets=False)
    one = parse_stack_config(stack({"replicas": 1}, idleTimeout="never"), require_secrets=False)
    r, o = estimate(ranged, "dev"), estimate(one, "dev")
    assert r.replicas == 3 and o.replicas == 1  # the worst case: every replica up all month
    assert any("vllm.replicas.min 1 keeps 1 of 3 GPU container(s) warm" in n for n in r.notes)
