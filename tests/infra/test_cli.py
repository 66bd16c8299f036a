"""`vllm-deploy render` and `check`, as a user runs them: the installed console script, or the same
command in-process (tests/support/cli.py), which the first tests hold to the same answers."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from components import manifests
from components.stackfile import load_stack
from tests.support.cli import CONSOLE_SCRIPT, vllm_deploy

run_cli = vllm_deploy  # in-process; the next test holds it to the console script's answers


@pytest.mark.parametrize("args", [("render", "prod"), ("check", "dev"), ("render", "staging"), ("--help",)])
def test_the_console_script_and_the_in_process_command_answer_alike(args: tuple[str, ...]) -> None:
    process = subprocess.run([str(CONSOLE_SCRIPT), *args], capture_output=True, text=True, timeout=120)
    in_process = run_cli(*args)
    assert (in_process.returncode, in_process.stdout, in_process.stderr) == (
        process.returncode,
        process.stdout,
        process.stderr,
    )


def test_render_prints_the_objects_pulumi_up_creates_as_multi_document_yaml() -> None:
    result = run_cli("render", "prod")
    assert result.returncode == 0, result.stderr
    documents = list(yaml.safe_load_all(result.stdout))
    assert documents == manifests.build(load_stack("prod")).all()
    assert [d["kind"] for d in documents].count("StatefulSet") == 1


def test_render_never_prints_secret_values(tmp_path: Path) -> None:
    stack = yaml.safe_load(Path("stacks/Pulumi.dev.yaml").read_text())
    stack["config"]["vllm-deploy:vllmApiKey"] = {"secure": "v1:AAAAencryptedvalue"}
    (tmp_path / "Pulumi.x.yaml").write_text(yaml.safe_dump(stack))
    result = run_cli("render", "x", "--stacks-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    secret = next(d for d in yaml.safe_load_all(result.stdout) if d["kind"] == "Secret")
    assert secret["stringData"] == {"VLLM_API_KEY": manifests.REDACTED}
    assert "encryptedvalue" not in result.stdout


def test_a_bad_stack_file_exits_2_with_one_line_per_problem_and_no_traceback(tmp_path: Path) -> None:
    (tmp_path / "Pulumi.bad.yaml").write_text(
        "config:\n  vllm-deploy:model: {id: m}\n  vllm-deploy:gpu: {type: A100X, count: 0}\n"
    )
    result = run_cli("render", "bad", "--stacks-dir", str(tmp_path))
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and "Pulumi.bad.yaml: gpu.type: unknown GPU type 'A100X'" in lines[0]
    assert "Pulumi.bad.yaml: gpu.count: Input should be greater than or equal to 1 (got 0)" in lines[1]
    assert "Traceback" not in result.stderr


def test_an_unknown_stack_lists_the_known_ones() -> None:
    result = run_cli("render", "staging")
    assert result.returncode == 2
    assert "no stack file Pulumi.staging.yaml" in result.stderr and "dev, local" in result.stderr


def test_check_explains_fit_and_startup_budget() -> None:
    result = run_cli("check", "prod")
    assert result.returncode == 0, result.stderr
    assert "fit: 137.0 GiB needed of 152.0 GiB (2 × A100-80GB at 0.95); tensor parallel 2" in result.stdout
    assert "startup budget: 30 min" in result.stdout
    assert "policy: ok" in result.stdout
