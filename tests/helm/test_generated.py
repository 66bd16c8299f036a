"""The chart repeats only what components/chartgen.py writes from the plan, and follows the same rules."""

from __future__ import annotations

import copy
import re
import shutil
from pathlib import Path

import helm_python
import pytest

from components import catalog, chartgen, policy
from components.config import parse_stack_config
from components.helm_values import helm_values
from components.secrets import SECRET_FLAGS, secret_flag
from components.stackfile import load_stack, stack_names
from tests.helm.chart import CHART_DIR, MINIMAL, render, render_stack
from tests.helm.test_parity import VARIANTS

KUBERNETES_STACKS = [s for s in stack_names() if load_stack(s).target == "kubernetes"]


def test_the_generated_chart_files_are_up_to_date():
    assert chartgen.stale() == [], "run `make generate` (python -m components.chartgen)"


def test_a_hand_edit_or_a_new_gpu_makes_them_stale(tmp_path: Path, monkeypatch):
    chart = tmp_path / "vllm-deploy"
    shutil.copytree(CHART_DIR, chart)
    assert chartgen.stale(chart) == []
    helpers = chart / chartgen.HELPERS
    helpers.write_text(helpers.read_text().replace("Tesla-T4", "Tesla-T4-edited"))
    assert chartgen.stale(chart) == [chartgen.HELPERS]

    monkeypatch.setattr(chartgen, "CHART", chart)  # `make generate` on the copy
    monkeypatch.setitem(catalog.GPUS, "X1", catalog.Gpu("X1", 96, ("NVIDIA-X1",)))
    assert chartgen.main(["--check"]) == 1
    assert chartgen.main([]) == 0 and chartgen.stale(chart) == []
    assert '"X1": {"gfd": {"nvidia.com/gpu.product": ["NVIDIA-X1"]}}' in helpers.read_text()
    assert '"X1"' in (chart / chartgen.SCHEMA).read_text()


def _spellings(flag: str) -> list[str]:
    underscored = "--" + flag[2:].replace("-", "_")
    return sorted({f"{flag}=v", f"{underscored}=v", flag})


@pytest.mark.parametrize("arg", [s for flag in SECRET_FLAGS for s in _spellings(flag)])
def test_the_chart_refuses_every_secret_flag_the_stack_config_refuses(chart, arg):
    assert secret_flag(arg)
    values = copy.deepcopy(MINIMAL) | {"vllm": {"extraArgs": ["--seed=1", arg]}}
    with pytest.raises(helm_python.HelmRenderError, match=re.escape(f"vllm.extraArgs: {secret_flag(arg)} must not")):
        render(chart, values, "vllm", "vllm")


def test_ordinary_arguments_pass(chart):
    values = copy.deepcopy(MINIMAL) | {"vllm": {"extraArgs": ["--tokenizer-mode=auto", "--api-server-count", "2"]}}
    assert render(chart, values, "vllm", "vllm")


def _helm_renders():
    for stack in KUBERNETES_STACKS:
        config = load_stack(stack)
        for mode in ("existing", "placeholders"):
            yield f"{stack}/{mode}", config, helm_values(config, mode)
    for name, raw in sorted(VARIANTS.items()):
        config = parse_stack_config(raw, secrets_present={"vllmApiKey"}, require_secrets=False)
        yield f"variant {name}", config, helm_values(config, "placeholders")


@pytest.mark.parametrize(("name", "config", "values"), list(_helm_renders()), ids=lambda v: v if isinstance(v, str) else "")
def test_helm_template_output_passes_the_policy_rules(chart, name, config, values):
    objects = render_stack(chart, values, config)
    assert objects and policy.violations(objects) == []


def test_the_policy_rules_do_read_helm_output(chart):
    config = load_stack("dev")
    objects = render_stack(chart, helm_values(config), config)
    network_policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    assert network_policies
    found = policy.violations([o for o in objects if o["kind"] != "NetworkPolicy"])
    assert "[fenced] StatefulSet/vllm: no NetworkPolicy selects its pods" in found


def test_every_generated_setting_and_flag_reads_a_chart_value_the_schema_declares(chart):
    from components import wrapper_env
    from components.plan import OPTIONAL_FLAGS

    for item in (*wrapper_env.STACK_SETTINGS, *wrapper_env.SCALER_SETTINGS, *wrapper_env.AUTOSCALE_SETTINGS, *OPTIONAL_FLAGS):
        node = chart.schema
        for part in item.key.split("."):
            node = node["properties"][part]
        assert node, item
