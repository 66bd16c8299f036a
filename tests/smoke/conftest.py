"""A real wrapper (subprocess) in front of a real vLLM (CPU build, tiny model), both on 127.0.0.1."""

from __future__ import annotations

import secrets
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.ports import free_port
from tests.support.processes import ServerProcess
from tests.support.vllm_fixture import real_vllm  # noqa: F401

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


class Wrapper(ServerProcess):
    """`python -m wrapper` as it runs in its pod, with the key clients must send (or None)."""

    def __init__(self, port: int, env: dict[str, str], key: str | None) -> None:
        self.key = key
        super().__init__([sys.executable, "-m", "wrapper"], port, env=env, ready="/health")


def start_wrapper(base_url: str, vllm_key: str, model: str | None, key: str | None,
                  env_extra: dict[str, str] | None = None) -> Wrapper:
    """`python -m wrapper` as it runs in its pod, configured through the VLLM_* environment."""
    port = free_port()
    env = {
        "VLLM_BASE_URL": base_url,
        "VLLM_API_KEY": vllm_key,
        "VLLM_WRAPPER_HOST": "127.0.0.1",
        "VLLM_WRAPPER_PORT": str(port),
        "VLLM_MAX_RETRIES": "0",
    }
    if model:
        env["VLLM_MODEL"] = model
    if key:
        env["VLLM_WRAPPER_API_KEY"] = key
    env.update(env_extra or {})
    return Wrapper(port, env, key)


@pytest.fixture(scope="session")
def wrapper(real_vllm) -> Iterator[Wrapper]:  # noqa: F811
    """The wrapper with a key, in front of the real vLLM; the model is found from vLLM (no VLLM_MODEL)."""
    running = start_wrapper(real_vllm.base_url, real_vllm.api_key, None, f"wk-{secrets.token_urlsafe(16)}")
    yield running
    running.stop()


@pytest.fixture(scope="session")
def vllm_down() -> Iterator[Wrapper]:
    """A real wrapper, no key, whose vLLM is down: nothing listens at its VLLM_BASE_URL."""
    running = start_wrapper(f"http://127.0.0.1:{free_port()}/v1", "unused", "tiny", None)
    yield running
    running.stop()


def stack_wrapper_env(stacks_dir: Path, stack: str) -> dict[str, str]:
    """The plain VLLM_* values of the stack's wrapper Deployment as `pulumi up` creates it
    (idle and wake timeouts, the StatefulSet to scale); addresses and secrets are the test's."""
    from components import manifests
    from components.stackfile import load_stack

    (deploy,) = [m for m in manifests.build(load_stack(stack, stacks_dir)).wrapper if m["kind"] == "Deployment"]
    env = deploy["spec"]["template"]["spec"]["containers"][0]["env"]
    addresses = {"VLLM_BASE_URL", "VLLM_WRAPPER_HOST", "VLLM_WRAPPER_PORT"}
    return {e["name"]: e["value"] for e in env if "value" in e and e["name"] not in addresses}


STACK = """
    # The stack the smoke tests check: the local CPU shape, with a tiny served model.
    config:
      vllm-deploy:target: kubernetes
      vllm-deploy:model:
        id: local/tiny-llama
        servedName: tiny
        gated: false
      vllm-deploy:gpu:
        type: none
      vllm-deploy:vllm:
        image: public.ecr.aws/q9t5s3a7/vllm-cpu-release-repo:v0.32.0
      vllm-deploy:wrapper:
        port: 8001
        wakeTimeout: 600
      vllm-deploy:kubernetes:
        namespace: smoke-ns
        releaseName: smoke
        context: ctx-from-stack
"""

# The same stack scaling vLLM to zero after 5 idle minutes; the wrapper holds a request up to
# 2 minutes while it wakes.
SLEEPY = STACK.replace("    vllm-deploy:gpu:", "    vllm-deploy:idleTimeout: 300\n      vllm-deploy:gpu:").replace(
    "wakeTimeout: 600", "wakeTimeout: 120"
)

# Modal stacks (checked with --url): always on, and autoscale scaling the GPU side to zero.
MODAL_ALWAYS_ON = """
    config:
      vllm-deploy:target: modal
      vllm-deploy:model: {id: meta-llama/Llama-3.1-8B-Instruct, servedName: tiny}
      vllm-deploy:wrapper: {wakeTimeout: 600}
"""
MODAL_AUTOSCALE = """
    config:
      vllm-deploy:target: modal
      vllm-deploy:model: {id: meta-llama/Llama-3.1-8B-Instruct, servedName: tiny}
      vllm-deploy:idleTimeout: 120
      vllm-deploy:modal: {architecture: autoscale, appName: smoke-modal, minContainers: 0}
      vllm-deploy:wrapper: {wakeTimeout: 3}
"""


@pytest.fixture()
def stacks_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "stacks"
    directory.mkdir()
    (directory / "Pulumi.smoke.yaml").write_text(textwrap.dedent(STACK))
    keyed = textwrap.dedent(STACK) + "  vllm-deploy:wrapperApiKey:\n    secure: v1:ciphertext-pulumi-decrypts\n"
    (directory / "Pulumi.keyed.yaml").write_text(keyed)
    (directory / "Pulumi.sleepy.yaml").write_text(textwrap.dedent(SLEEPY))
    (directory / "Pulumi.modal-on.yaml").write_text(textwrap.dedent(MODAL_ALWAYS_ON))
    (directory / "Pulumi.modal-auto.yaml").write_text(textwrap.dedent(MODAL_AUTOSCALE))
    return directory


@pytest.fixture()
def fake_bin(tmp_path: Path) -> Path:
    """A PATH directory with the stand-in `kubectl` (the TCP forwarder of forwarder.py)."""
    directory = tmp_path / "bin"
    directory.mkdir()
    kubectl = directory / "kubectl"
    kubectl.write_text(f"#!/bin/sh\nexec {sys.executable} {HERE / 'forwarder.py'} \"$@\"\n")
    kubectl.chmod(0o755)
    return directory
