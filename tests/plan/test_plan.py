"""The serving plan is the one place a stack's serving facts are decided; every target reads it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from components import catalog, manifests, wrapper_env
from components.config import ConfigError, parse_stack_config
from components.modal_target import app_spec
from components.plan import serving_plan
from components.secrets import SECRETS
from components.stackfile import load_stack, read_raw, stack_names
from wrapper.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
# The variable names components/wrapper_env.py declares.
CONTRACT = {value for value in vars(wrapper_env).values() if isinstance(value, str) and value.startswith("VLLM_")}


def test_every_wrapper_variable_a_target_sets_is_a_setting_the_wrapper_reads():
    """wrapper/settings.py reads `VLLM_<FIELD>` (env_prefix VLLM_, case-insensitive)."""
    fields = {f"VLLM_{name.upper()}" for name in Settings.model_fields}
    assert len(CONTRACT) == 30 and CONTRACT <= fields
    # The secret keys the wrapper reads are the Secret's keys.
    assert {wrapper_env.API_KEY, wrapper_env.WRAPPER_API_KEY} <= {key.env for key in SECRETS}


def test_the_stack_accepts_the_retries_the_wrapper_accepts_and_no_more():
    bound = Settings.model_fields["max_retries"].metadata
    assert any(getattr(m, "le", None) == wrapper_env.MAX_RETRIES_LIMIT for m in bound)
    raw = read_raw("dev")
    config = parse_stack_config({**raw, "wrapper": {"maxRetries": wrapper_env.MAX_RETRIES_LIMIT}}, require_secrets=False)
    env = {e["name"]: e.get("value") for e in manifests.wrapper_env(config, serving_plan(config))}
    assert env[wrapper_env.MAX_RETRIES] == "20"
    with pytest.raises(ConfigError, match="wrapper.maxRetries: Input should be less than or equal to 20"):
        parse_stack_config({**raw, "wrapper": {"maxRetries": 21}}, require_secrets=False)


@pytest.mark.parametrize("stack", stack_names())
def test_each_target_carries_the_plan_unchanged(stack):
    config = load_stack(stack)
    plan = serving_plan(config)
    if config.target == "kubernetes":
        objects = manifests.build(config)
        sts = objects.vllm[0]
        container = sts["spec"]["template"]["spec"]["containers"][0]
        assert tuple(container["args"]) == plan.vllm_args
        assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == plan.cache_size
        wrapper = objects.wrapper[0]["spec"]["template"]["spec"]["containers"][0]
        plain = {e["name"]: e["value"] for e in wrapper["env"] if "value" in e}
        assert plan.wrapper.environment().items() <= plain.items()
    else:
        spec = app_spec(config, stack)
        assert spec.vllm_args == plan.vllm_args and spec.startup_timeout == plan.startup_budget_seconds
        assert (spec.gpu_type, spec.gpu_count) == (plan.gpu.type, plan.gpu.count)
        if spec.architecture == "autoscale":
            assert spec.wrapper_env[wrapper_env.TIMEOUT] == str(plan.wrapper.timeout_through_cold_start)


def test_the_plan_has_the_catalog_facts_of_the_gpu():
    plan = serving_plan(load_stack("prod"))
    assert plan.gpu.spec == catalog.GPUS["A100-80GB"] and plan.gpu.tensor_parallel_size == 2
    local = serving_plan(load_stack("local"))
    assert local.gpu.is_cpu and local.gpu.spec is None and local.gpu.tensor_parallel_size == 1


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def test_the_modal_target_never_imports_the_kubernetes_one():
    kubernetes = {"components.manifests", "components.kubernetes", "components.helm_values"}
    for path in [ROOT / "components" / "modal_target.py", *(ROOT / "components" / "modal_app").glob("*.py")]:
        assert not _imports(path) & kubernetes, path


def test_wrapper_limits_and_routing_reach_the_wrapper_only_when_set():
    """`wrapper.limits.*` and `wrapper.routing` (issues 13, 14): unset, the wrapper's own defaults
    hold and no variable is written; set, the value the wrapper's settings parse."""
    raw = read_raw("dev")
    plain = {e["name"] for e in manifests.wrapper_env(load_stack("dev"), serving_plan(load_stack("dev")))}
    assert not plain & {wrapper_env.MAX_N, wrapper_env.RATE_LIMIT_TOKENS, wrapper_env.ROUTING}
    section = {"limits": {"maxN": 2, "maxPromptChars": 50_000, "rateLimitTokens": 100_000}, "routing": "least-load"}
    config = parse_stack_config({**raw, "wrapper": section}, require_secrets=False)
    env = {e["name"]: e.get("value") for e in manifests.wrapper_env(config, serving_plan(config))}
    wanted = {"VLLM_MAX_N": "2", "VLLM_MAX_PROMPT_CHARS": "50000", "VLLM_RATE_LIMIT_TOKENS": "100000",
              "VLLM_ROUTING": "least-load"}
    assert {k: env[k] for k in wanted} == wanted
    settings = Settings(**{k.removeprefix("VLLM_").lower(): v for k, v in wanted.items()})
    assert (settings.max_n, settings.max_prompt_chars, settings.routing) == (2, 50_000, "least-load")
    with pytest.raises(ConfigError, match=r"wrapper.limits.maxN"):
        parse_stack_config({**raw, "wrapper": {"limits": {"maxN": 0}}}, require_secrets=False)
    with pytest.raises(ConfigError, match=r"wrapper.routing"):
        parse_stack_config({**raw, "wrapper": {"routing": "random"}}, require_secrets=False)


def test_several_vllm_replicas_are_routed_by_pod_and_all_come_back_from_zero():
    """vllm.replicas > 1: the wrapper gets each pod's DNS name under the headless Service (the
    StatefulSet's `serviceName`), so it routes by prefix and fails over (wrapper/routing/); a wake
    from zero restores every replica (VLLM_K8S_REPLICAS)."""
    raw = read_raw("dev")
    config = parse_stack_config({**raw, "vllm": {**raw.get("vllm", {}), "replicas": 3}}, require_secrets=False)
    objects = manifests.build(config)
    sts = next(o for o in objects.vllm if o["kind"] == "StatefulSet")
    env = {e["name"]: e.get("value") for e in manifests.wrapper_env(config, serving_plan(config))}
    n = manifests.names(config)
    urls = env[wrapper_env.BASE_URL].split(",")
    assert urls == [
        f"http://{n.vllm}-{i}.{sts['spec']['serviceName']}.{n.namespace}.svc.cluster.local:8000/v1" for i in range(3)
    ]
    assert env[wrapper_env.K8S_REPLICAS] == "3"
    settings = Settings(base_url=env[wrapper_env.BASE_URL], k8s_replicas=env[wrapper_env.K8S_REPLICAS])
    assert len(settings.base_urls) == 3 and settings.k8s_replicas == 3
