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
    assert len(CONTRACT) == 15 and CONTRACT <= fields
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
