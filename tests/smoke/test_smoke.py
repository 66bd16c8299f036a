"""`vllm-deploy smoke` against a real wrapper in front of a real vLLM, both started by the tests.

No mocks: the port-forward step runs a stand-in `kubectl` (tests/smoke/forwarder.py) that
really forwards the local port smoke picked to the running wrapper and records the arguments
it was given; scale-to-zero is a real vLLM behind a port that opens only after a delay.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.smoke.conftest import REPO, Wrapper, free_port, start_wrapper
from tests.smoke.forwarder import Forwarder

ALL_CHECKS = ["health", "models", "chat", "stream", "auth", "metrics"]


def smoke(args: list[str], *, key: str | None = None, path: list[Path] = (), extra_env: dict | None = None,
          timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "SMOKE_"))}
    if key is not None:
        env["VLLM_WRAPPER_API_KEY"] = key
    env["PATH"] = os.pathsep.join([*map(str, path), env.get("PATH", "")])
    env.update(extra_env or {})
    return subprocess.run(
        [sys.executable, "-m", "components.cli", "smoke", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
    )


def kubectl_runs(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def closed(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return False
    except OSError:
        return True


def assert_no_key(result: subprocess.CompletedProcess[str], *keys: str | None) -> None:
    for key in keys:
        if key:
            assert key not in result.stdout and key not in result.stderr


def test_port_forward_all_checks_pass(wrapper: Wrapper, stacks_dir: Path, fake_bin: Path, tmp_path: Path) -> None:
    log = tmp_path / "kubectl.jsonl"
    result = smoke(
        ["smoke", "--stacks-dir", str(stacks_dir), "--json"],
        key=wrapper.key, path=[fake_bin],
        extra_env={"SMOKE_KUBECTL_LOG": str(log), "SMOKE_FORWARD_TO": str(wrapper.port)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] and report["via"] == "port-forward" and report["model"] == "tiny"
    assert [c["name"] for c in report["checks"]] == ALL_CHECKS
    assert all(c["status"] == "pass" for c in report["checks"]), report["checks"]
    assert report["wake_seconds"] is None and report["key_configured"] is True
    assert_no_key(result, wrapper.key)

    # What smoke asked kubectl for: the stack's namespace, wrapper Service, context and port.
    start, stop = kubectl_runs(log)
    local = int(report["url"].rsplit(":", 1)[1])
    assert start["argv"] == [
        "--context", "ctx-from-stack", "port-forward", "--namespace", "smoke-ns", "svc/smoke-wrapper",
        f"{local}:8001", "--address", "127.0.0.1",
    ]
    # ...and that it closed the forward afterwards.
    assert stop == {"event": "stopped", "pid": start["pid"]}
    assert closed(local)
    assert "port-forward svc/smoke-wrapper -n smoke-ns" in result.stderr
    assert "port-forward closed" in result.stderr


def test_context_override_and_table(wrapper: Wrapper, stacks_dir: Path, fake_bin: Path, tmp_path: Path) -> None:
    log = tmp_path / "kubectl.jsonl"
    result = smoke(
        ["smoke", "--stacks-dir", str(stacks_dir), "--context", "other-ctx"],
        key=wrapper.key, path=[fake_bin],
        extra_env={"SMOKE_KUBECTL_LOG": str(log), "SMOKE_FORWARD_TO": str(wrapper.port)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert kubectl_runs(log)[0]["argv"][:2] == ["--context", "other-ctx"]
    lines = result.stdout.splitlines()
    for name in ALL_CHECKS:
        (line,) = [l for l in lines if l.split()[1:2] == [name]]
        assert line.split()[0] == "PASS" and " s " in line, line
    assert lines[-1] == "ok: 6 passed, 0 failed"
    assert "usage" in next(l for l in lines if " chat " in l)
    assert "[DONE]" in next(l for l in lines if " stream " in l)
    assert_no_key(result, wrapper.key)


def test_wrong_key_fails(wrapper: Wrapper, stacks_dir: Path) -> None:
    wrong = "not-the-wrapper-key-0123456789"
    result = smoke(["smoke", "--stacks-dir", str(stacks_dir), "--url", wrapper.url], key=wrong)
    assert result.returncode == 1, result.stdout + result.stderr
    fails = {l.split()[1]: l for l in result.stdout.splitlines() if l.startswith("  FAIL")}
    assert {"models", "chat", "stream"} <= set(fails)
    assert "HTTP 401: the wrapper refused the key" in fails["models"]
    assert result.stdout.splitlines()[-1].startswith("FAILED:")
    assert_no_key(result, wrong, wrapper.key)


def test_no_key_against_a_keyed_wrapper_fails(wrapper: Wrapper, stacks_dir: Path) -> None:
    result = smoke(["smoke", "--stacks-dir", str(stacks_dir), "--url", wrapper.url, "--json"])
    assert result.returncode == 1
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["models"]["status"] == "fail" and "set VLLM_WRAPPER_API_KEY" in checks["models"]["detail"]
    assert checks["auth"]["status"] == "fail"


def test_backend_down_fails_after_the_wake_timeout(stacks_dir: Path) -> None:
    down = start_wrapper(f"http://127.0.0.1:{free_port()}/v1", "unused", "tiny", None)
    try:
        result = smoke(["smoke", "--stacks-dir", str(stacks_dir), "--url", down.url, "--wake-timeout", "3", "--json"])
    finally:
        down.stop()
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["health"]["status"] == "pass" and "vLLM not available" in checks["health"]["detail"]
    assert checks["wake"]["status"] == "fail"
    assert checks["wake"]["detail"].startswith("vLLM not available after 3 s")
    assert 3 <= checks["wake"]["seconds"] < 10
    assert checks["auth"]["status"] == "skip"  # this wrapper has no key: the line says it is open
    assert "models" not in checks and not report["ok"]


def test_scaled_to_zero_backend_is_woken(real_vllm, stacks_dir: Path) -> None:  # noqa: F811
    """vLLM behind a port that opens 6 s later: health reports it unavailable, smoke waits, reports the wake."""
    port = free_port()
    backend_port = int(real_vllm.base_url.rsplit(":", 1)[1].split("/")[0])
    sleeper = start_wrapper(f"http://127.0.0.1:{port}/v1", real_vllm.api_key, None, None)
    gate = Forwarder(port, backend_port, delay=6).start()
    try:
        result = smoke(["smoke", "--stacks-dir", str(stacks_dir), "--url", sleeper.url, "--json"])
    finally:
        gate.stop()
        sleeper.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert [c["name"] for c in report["checks"]] == ["health", "wake", *ALL_CHECKS[1:]]
    assert all(c["ok"] for c in report["checks"])
    assert 2 <= report["wake_seconds"] <= 30
    assert "waking it" in result.stderr


def test_key_read_from_the_stack_secret_config(wrapper: Wrapper, stacks_dir: Path, tmp_path: Path) -> None:
    """No key in the environment: smoke asks `pulumi config get wrapperApiKey --stack keyed`."""
    bin_dir = tmp_path / "pulumi-bin"
    bin_dir.mkdir()
    calls = tmp_path / "pulumi-calls"
    pulumi = bin_dir / "pulumi"
    pulumi.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> {calls}\n'
        '[ "$*" = "config get wrapperApiKey --stack keyed" ] || { echo "unexpected: $*" >&2; exit 1; }\n'
        f"echo {wrapper.key}\n"
    )
    pulumi.chmod(0o755)
    result = smoke(["keyed", "--stacks-dir", str(stacks_dir), "--url", wrapper.url], path=[bin_dir])
    assert result.returncode == 0, result.stdout + result.stderr
    assert calls.read_text().split("\n")[0] == "config get wrapperApiKey --stack keyed"
    assert "wrapper key from the stack secret config" in result.stderr
    assert_no_key(result, wrapper.key)


def test_declared_key_without_a_way_to_read_it(stacks_dir: Path, tmp_path: Path) -> None:
    # PATH without pulumi: only the interpreter's directory.
    result = smoke(
        ["keyed", "--stacks-dir", str(stacks_dir), "--url", "http://127.0.0.1:9"],
        extra_env={"PATH": str(Path(sys.executable).parent)},
    )
    assert result.returncode == 2
    assert "VLLM_WRAPPER_API_KEY is not set and the pulumi CLI is not installed" in result.stderr


def test_kubectl_that_cannot_forward(stacks_dir: Path, tmp_path: Path) -> None:
    """A kubectl that exits at once (no cluster): a clear error and exit 2, not a hang."""
    bin_dir = tmp_path / "broken-bin"
    bin_dir.mkdir()
    kubectl = bin_dir / "kubectl"
    kubectl.write_text('#!/bin/sh\necho "error: services \\"smoke-wrapper\\" not found" >&2\nexit 1\n')
    kubectl.chmod(0o755)
    result = smoke(["smoke", "--stacks-dir", str(stacks_dir)], key="k", path=[bin_dir])
    assert result.returncode == 2
    assert 'kubectl port-forward exited with 1: error: services "smoke-wrapper" not found' in result.stderr


def test_modal_stack_needs_a_url(tmp_path: Path) -> None:
    (tmp_path / "Pulumi.m.yaml").write_text(
        "config:\n  vllm-deploy:target: modal\n  vllm-deploy:model: {id: meta-llama/Llama-3.1-8B-Instruct}\n"
    )
    result = smoke(["m", "--stacks-dir", str(tmp_path)], key="k")
    assert result.returncode == 2 and "pass the wrapper's URL with --url" in result.stderr
