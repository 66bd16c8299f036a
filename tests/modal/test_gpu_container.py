"""The GPU container's vLLM: how it is started, what its image sets, and that it stops cleanly."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from components.config import parse_stack_config
from components.modal_app import REPO_ROOT
from components.modal_app.common import stop_process
from components.modal_target import app_spec
from components.stackfile import read_raw
from tests.modal.conftest import spec_for
from tests.modal.modal_objects import dockerfile_commands


def test_vllm_starts_with_vllm_serve_and_the_plans_flags():
    spec = spec_for("modal-prod")
    # `vllm serve` takes the same flags as the deprecated api_server module, --model included.
    assert spec.vllm_command() == ["vllm", "serve", *spec.vllm_args]
    assert spec.vllm_shutdown_seconds == 30


def test_a_pinned_revision_reaches_vllm_which_downloads_that_revision():
    raw = read_raw("modal-dev")
    revision = "0e9e39f249a16976918f6564b8830bc894c89659"
    config = parse_stack_config({**raw, "model": {**raw["model"], "revision": revision}}, require_secrets=False)
    command = app_spec(config, "x").vllm_command()
    assert command[command.index("--revision") + 1] == revision


def test_the_gpu_image_downloads_with_xet_high_performance(dev):
    _, module = dev
    assert "ENV HF_XET_HIGH_PERFORMANCE=1" in dockerfile_commands(module.serve_vllm)


CHILD = textwrap.dedent(
    """
    import signal, sys, time
    def drain(*_):
        open(sys.argv[1], "w").write("drained")
        sys.exit(0)
    signal.signal(signal.SIGTERM, drain if sys.argv[2] == "drains" else signal.SIG_IGN)
    print("ready", flush=True)
    while True:
        time.sleep(0.1)
    """
)


def _child(tmp_path, mode: str) -> tuple[subprocess.Popen[bytes], object]:
    marker = tmp_path / f"{mode}.txt"
    process = subprocess.Popen([sys.executable, "-c", CHILD, str(marker), mode], stdout=subprocess.PIPE)
    assert process.stdout.readline() == b"ready\n"  # its SIGTERM handler is installed
    return process, marker


def test_vllm_gets_sigterm_and_its_grace_on_container_exit(tmp_path):
    process, marker = _child(tmp_path, "drains")
    assert stop_process(process, grace_seconds=30) == 0
    assert marker.read_text() == "drained"


def test_a_server_that_ignores_sigterm_is_killed_after_the_grace(tmp_path):
    process, _ = _child(tmp_path, "ignores")
    assert stop_process(process, grace_seconds=0.5) == -9


def test_the_container_exiting_stops_vllm_cleanly(tmp_path, dev):
    """The whole path in a fresh interpreter, as in the GPU container: `start_vllm` runs a `vllm`
    on PATH (here a stand-in that drains on SIGTERM), then the interpreter exits as Modal stops
    the container; the atexit hook must SIGTERM vLLM and wait for it."""
    spec, _ = dev
    marker = tmp_path / "vllm-drained.txt"
    fake = tmp_path / "bin" / "vllm"
    fake.parent.mkdir()
    ready = tmp_path / "vllm-ready.txt"
    script = CHILD.replace("sys.argv[1]", repr(str(marker))).replace('sys.argv[2] == "drains"', "True")
    script = script.replace('print("ready", flush=True)', f"open({str(ready)!r}, 'w').close()")
    fake.write_text(f"#!{sys.executable}\n" + script)
    fake.chmod(0o755)
    code = textwrap.dedent(
        """
        import os, sys, time
        from components.modal_app import common
        from components.modal_app.spec import AppSpec
        process = common.start_vllm(AppSpec.from_json(sys.argv[1]))
        while not os.path.exists(sys.argv[2]):  # vLLM is up (its SIGTERM handler set)
            time.sleep(0.05)
        # ...and now the container stops: the interpreter exits
        """
    )
    env = {"PATH": f"{fake.parent}:/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run([sys.executable, "-c", code, spec.to_json(), str(ready)], env=env, cwd=REPO_ROOT, timeout=60)
    assert done.returncode == 0
    assert marker.read_text() == "drained"
