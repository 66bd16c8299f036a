"""One place chooses a stack's target; nothing else compares the target's name."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import get_args

import pytest

from components.config import StackConfig
from components.stackfile import load_stack, stack_names
from components.targets import target_of

ROOT = Path(__file__).resolve().parents[2]
# Modules that ask the target instead of comparing its name.
TARGET_NEUTRAL = ["components/program.py", "components/cost.py", "components/smoke.py", *sorted(
    str(p.relative_to(ROOT)) for p in (ROOT / "components" / "cli").glob("*.py")
)]


def test_every_target_a_stack_can_name_has_a_module():
    for name in get_args(StackConfig.model_fields["target"].annotation):
        config = load_stack("dev").model_copy(update={"target": name})
        assert target_of(config).name == name


@pytest.mark.parametrize("stack", stack_names())
def test_a_target_declares_kubernetes_objects_exactly_when_it_has_a_wrapper_service(stack):
    config = load_stack(stack)
    target = target_of(config)
    assert (target.objects(config) is None) == (target.wrapper_service(config) is None)


@pytest.mark.parametrize("path", TARGET_NEUTRAL)
def test_no_module_but_the_targets_compares_the_target_name(path):
    for node in ast.walk(ast.parse((ROOT / path).read_text())):
        if isinstance(node, ast.Compare):
            parts = [node.left, *node.comparators]
            names = {p.value for p in parts if isinstance(p, ast.Constant)}
            reads_target = any(isinstance(p, ast.Attribute) and p.attr == "target" for p in parts)
            assert not (reads_target or names & {"kubernetes", "modal"}), f"{path}:{node.lineno}"


def test_the_cli_and_the_targets_load_no_pulumi_or_modal_sdk():
    """A target imports its Pulumi components only to deploy, so `vllm-deploy` starts quickly."""
    import subprocess
    import sys

    code = "import sys, components.cli; print(sorted(m for m in sys.modules if m.split('.')[0] in ('pulumi', 'modal')))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
