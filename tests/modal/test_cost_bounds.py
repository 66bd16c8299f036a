"""`vllm-deploy cost` on a Modal stack shows the most its bounds allow: maxContainers GPU
containers busy all month, and how long one request may hold one (functionTimeout)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from components.cli import app
from components.stackfile import STACKS_DIR

runner = CliRunner()


def _cost(stack: str, *args: str, stacks_dir: Path = STACKS_DIR) -> dict:
    result = runner.invoke(app, ["cost", stack, "--stacks-dir", str(stacks_dir), "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_prod_worst_case_is_one_container_of_two_a100s_all_month():
    data = _cost("modal-prod", "--gpu-hourly", "2.50", "--wrapper-hourly", "0")
    assert data["max_containers"] == 1 and data["request_timeout_seconds"] == 1800
    assert data["worst_case_monthly"] == round(2.50 * 2 * 1 * 24 * 30, 2) == 3600.0


def test_the_worst_case_grows_with_max_containers(tmp_path):
    stack = yaml.safe_load((STACKS_DIR / "Pulumi.modal-prod.yaml").read_text())
    stack["config"]["vllm-deploy:modal"]["maxContainers"] = 3
    (tmp_path / "Pulumi.burst.yaml").write_text(yaml.safe_dump(stack))
    data = _cost("burst", "--gpu-hourly", "2.50", "--wrapper-hourly", "0.01", stacks_dir=tmp_path)
    assert data["worst_case_monthly"] == round((2.50 * 2 * 3 + 0.01) * 24 * 30, 2)
    table = runner.invoke(app, ["cost", "burst", "--stacks-dir", str(tmp_path), "--gpu-hourly", "2.50"]).output
    assert "worst case: $10,800.07/mo — at most 3 GPU container(s) (modal.maxContainers)" in table
    assert "1800 s (modal.functionTimeout)" in table


def test_kubernetes_stacks_have_no_modal_worst_case():
    kube = next(p.name[len("Pulumi."):-len(".yaml")] for p in sorted(STACKS_DIR.glob("Pulumi.*.yaml"))
                if "target: modal" not in p.read_text())  # fmt: skip
    data = _cost(kube, "--gpu-hourly", "1")
    assert data["worst_case_monthly"] is None and data["max_containers"] is None
