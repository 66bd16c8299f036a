"""`vllm-deploy` from where the user stands: a misspelt key gets a "did you mean", paths in errors
are the ones the user would type, and in a Pulumi project the stack files are the project's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from components.config import ConfigError, parse_stack_config
from components.projectdir import CHECKOUT_STACKS_DIR, shown, stacks_dir_for

CLI = Path(sys.executable).with_name("vllm-deploy")
TYPO = "config:\n  vllm-deploy:model:\n    id: Qwen/Qwen2.5-0.5B-Instruct\n    gatde: false\n"


def problems(raw: dict) -> list[str]:
    with pytest.raises(ConfigError) as error:
        parse_stack_config(raw, require_secrets=False)
    return error.value.problems


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ({"model": {"id": "m", "gatde": False}}, "model.gatde: unknown key; did you mean 'gated'?"),
        ({"model": {"id": "m"}, "idelTimeout": 60}, "idelTimeout: unknown key; did you mean 'idleTimeout'?"),
        (
            {"model": {"id": "m"}, "vllm": {"maxModleLen": 4096}},
            "vllm.maxModleLen: unknown key; did you mean 'maxModelLen'?",
        ),
        (
            {"model": {"id": "m"}, "wrapper": {"replicas": {"mx": 3}}},
            "wrapper.replicas.mx: unknown key; did you mean 'max'?",
        ),
        ({"model": {"id": "m"}, "vllmApiKy": "x"}, "vllmApiKy: unknown key; did you mean 'vllmApiKey'?"),
    ],
)
def test_a_misspelt_key_gets_the_key_it_was_meant_to_be(raw: dict, says: str) -> None:
    assert problems(raw) == [says]


def test_a_key_like_no_other_points_at_the_readme() -> None:
    (line,) = problems({"model": {"id": "m"}, "kubernetes": {"zzzz": 1}})
    assert line == "kubernetes.zzzz: unknown key; check its spelling against the README's configuration table"


def test_paths_are_shown_relative_under_the_current_directory_else_absolute(tmp_path: Path) -> None:
    inside = tmp_path / "stacks" / "Pulumi.dev.yaml"
    assert shown(inside, cwd=tmp_path) == "stacks/Pulumi.dev.yaml"
    assert shown(inside, cwd=tmp_path / "elsewhere") == str(inside)


def test_a_pulumi_project_keeps_its_stacks_in_its_stack_config_dir(tmp_path: Path) -> None:
    assert stacks_dir_for(tmp_path) == CHECKOUT_STACKS_DIR  # not a project: the checkout's stacks
    (tmp_path / "Pulumi.yaml").write_text("name: p\nruntime: python\n")
    assert stacks_dir_for(tmp_path) == tmp_path  # Pulumi's default: beside Pulumi.yaml
    (tmp_path / "Pulumi.yaml").write_text("name: p\nruntime: python\nstackConfigDir: stacks\n")
    assert stacks_dir_for(tmp_path) == tmp_path / "stacks"


def vllm_deploy(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLI), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_check_in_a_project_reads_its_stacks_and_names_the_file_as_the_user_sees_it(tmp_path: Path) -> None:
    (tmp_path / "Pulumi.yaml").write_text("name: mine\nruntime: python\nstackConfigDir: stacks\n")
    (tmp_path / "stacks").mkdir()
    (tmp_path / "stacks" / "Pulumi.typo.yaml").write_text(TYPO)
    result = vllm_deploy(tmp_path, "check", "typo")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: stacks/Pulumi.typo.yaml: model.gatde: unknown key; did you mean 'gated'?"


def test_check_outside_a_project_uses_the_checkouts_stacks_with_absolute_paths(tmp_path: Path) -> None:
    assert vllm_deploy(tmp_path, "check", "local").returncode == 0
    result = vllm_deploy(tmp_path, "check", "no-such-stack")
    assert result.returncode == 2
    assert f"no stack file Pulumi.no-such-stack.yaml in {CHECKOUT_STACKS_DIR} (stacks: " in result.stderr
