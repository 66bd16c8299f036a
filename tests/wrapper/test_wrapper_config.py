"""Start-up configuration: the real entry points, real processes; each bad value through the
entry point's own ``main()`` in this process, and one through ``python -m wrapper``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.wrapper._wrapper_servers import REPO, Proc, free_port, start_in_process


def run_wrapper(env: dict[str, str], cwd: Path = REPO, cmd: list[str] | None = None) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("VLLM_")}
    full["PYTHONPATH"] = str(REPO)
    full.update(env)
    return subprocess.run(cmd or [sys.executable, "-m", "wrapper"], cwd=cwd, env=full, capture_output=True,
                          text=True, timeout=30)


@pytest.mark.parametrize(
    "var,value",
    [
        ("VLLM_TIMEOUT", "abc"),
        ("VLLM_TIMEOUT", "-1"),
        ("VLLM_WRAPPER_PORT", "70000"),
        ("VLLM_MAX_RETRIES", "many"),
        ("VLLM_BASE_URL", "not a url"),
        ("VLLM_DEFAULT_TEMPERATURE", "5"),
        ("VLLM_DEFAULT_MAX_TOKENS", "0"),
        ("VLLM_LOG_LEVEL", "chatty"),
        ("VLLM_MAX_BODY_BYTES", "10"),
    ],
)
def test_invalid_value_is_one_clear_line(var, value, monkeypatch, capsys, tmp_path):
    secret = "sk-do-not-print-me"
    out = start_in_process({var: value, "VLLM_API_KEY": secret, "VLLM_WRAPPER_API_KEY": secret + "2"},
                           monkeypatch, capsys, tmp_path)
    assert out.returncode == 2
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("vllm-wrapper: invalid configuration: ") and var in lines[0]
    assert "Traceback" not in out.stderr and secret not in out.stderr


def test_the_process_exits_2_with_the_same_one_line():
    """The in-process starts above are ``main()``; ``python -m wrapper`` exits with what it returns."""
    secret = "sk-do-not-print-me"
    out = run_wrapper({"VLLM_TIMEOUT": "abc", "VLLM_API_KEY": secret})
    assert out.returncode == 2 and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vllm-wrapper: invalid configuration: VLLM_TIMEOUT"), out.stderr
    assert "Traceback" not in out.stderr and secret not in out.stderr


def test_console_script_and_dotenv(tmp_path, fault_upstream):
    exe = Path(sys.executable).with_name("vllm-wrapper")
    assert exe.exists() or shutil.which("vllm-wrapper"), "console script vllm-wrapper not installed"
    port = free_port()
    (tmp_path / ".env").write_text(
        f"VLLM_BASE_URL={fault_upstream.base_url}\nVLLM_WRAPPER_HOST=127.0.0.1\nVLLM_WRAPPER_PORT={port}\n"
        "VLLM_API_KEY=upstream-secret-key\nVLLM_MODEL=fake-echo\n"
    )
    p = Proc([str(exe if exe.exists() else shutil.which("vllm-wrapper"))], port, env={"PYTHONPATH": str(REPO)},
             ready="/health", cwd=tmp_path)
    try:
        h = httpx.get(p.url + "/health").json()
        assert h["base_url"] == fault_upstream.base_url and h["model"] == "fake-echo" and h["vllm_available"]
        assert httpx.post(p.url + "/chat", json={"messages": [{"role": "user", "content": "hi"}]}).status_code == 200
    finally:
        p.stop()
    assert "upstream-secret-key" not in p.log()


def test_environment_overrides_dotenv(tmp_path):
    (tmp_path / ".env").write_text("VLLM_TIMEOUT=abc\n")
    out = run_wrapper({}, cwd=tmp_path)
    assert out.returncode == 2 and "VLLM_TIMEOUT" in out.stderr
    port = free_port()
    p = Proc([sys.executable, "-m", "wrapper"], port, ready="/health", cwd=tmp_path,
             env={"PYTHONPATH": str(REPO), "VLLM_TIMEOUT": "5", "VLLM_WRAPPER_HOST": "127.0.0.1",
                  "VLLM_WRAPPER_PORT": str(port), "VLLM_BASE_URL": f"http://127.0.0.1:{free_port()}/v1"})
    try:
        assert httpx.get(p.url + "/health").json()["vllm_available"] is False
    finally:
        p.stop()
