"""Preflight against a recorded cluster: the stand-in `kubectl` on PATH answers from fixtures/."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import vllm_deploy

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
GKE_CONTEXT = "gke_my-project_us-central1_gpu-cluster"
EKS_CONTEXT = "arn:aws:eks:us-west-2:111122223333:cluster/gpu-cluster"


def gke_cluster() -> dict[str, Any]:
    """A GKE cluster where the dev stack can deploy: an A100 node with the GPU Operator's labels."""
    return {
        "current_context": GKE_CONTEXT,
        "contexts": [GKE_CONTEXT, "kind-kind"],
        "answers": {
            "get --raw /version": "version-gke.json",
            "get nodes": "nodes-gke-gpu.json",
            "get daemonsets --all-namespaces": "daemonsets-gpu-operator.json",
            "get storageclasses": "storageclasses-gke.json",
            "get namespace vllm-dev": "namespace-vllm-dev-baseline.json",
        },
        "can_i": {},
    }


def eks_karpenter_cluster() -> dict[str, Any]:
    """An EKS >= 1.30 cluster: CPU system nodes, a Karpenter A100 NodePool at zero, no default StorageClass."""
    return {
        "current_context": EKS_CONTEXT,
        "contexts": [EKS_CONTEXT],
        "answers": {
            "get --raw /version": "version-eks.json",
            "get nodes": "nodes-eks-cpu-only.json",
            "get nodepools.karpenter.sh": "nodepools-karpenter.json",
            "get daemonsets --all-namespaces": "daemonsets-gpu-operator.json",
            "get storageclasses": "storageclasses-eks.json",
        },
        "can_i": {},
    }


@dataclass
class Preflight:
    """Runs `vllm-deploy preflight` as a user would, against `cluster` (edit it before `run`)."""

    tmp_path: Path
    cluster: dict[str, Any] = field(default_factory=gke_cluster)
    as_process: bool = False  # True: `python -m components.cli preflight`, else in-process (tests/support/cli.py)

    @property
    def log(self) -> Path:
        return self.tmp_path / "kubectl-calls.jsonl"

    def run(self, *args: str, stacks_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
        scenario = self.tmp_path / "cluster.json"
        scenario.write_text(json.dumps(self.cluster))
        bin_dir = self.tmp_path / "bin"
        bin_dir.mkdir(exist_ok=True)
        kubectl = bin_dir / "kubectl"
        # -S: the stand-in needs only the standard library, and starts ~4x faster without the venv's site
        kubectl.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "{HERE / "kubectl_standin.py"}" "$@"\n')
        kubectl.chmod(0o755)
        env: dict[str, str | None] = {k: None for k in os.environ if k.startswith(("PREFLIGHT_", "KUBECONFIG"))}
        env.update(
            PATH=os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")]),
            PREFLIGHT_CLUSTER=str(scenario),
            PREFLIGHT_KUBECTL_LOG=str(self.log),
        )
        command = ["preflight", *args, *(["--stacks-dir", str(stacks_dir)] if stacks_dir is not None else [])]
        if self.as_process:
            process_env = {k: v for k, v in {**os.environ, **env}.items() if v is not None}
            return subprocess.run([sys.executable, "-m", "components.cli", *command], cwd=REPO, env=process_env,
                                  capture_output=True, text=True, timeout=120, check=False)
        return vllm_deploy(*command, cwd=REPO, env=env)  # the same command, without a Python start per test

    def json(self, *args: str, stacks_dir: Path | None = None) -> tuple[int, dict[str, Any]]:
        done = self.run(*args, "--json", stacks_dir=stacks_dir)
        assert done.stdout, done.stderr
        return done.returncode, json.loads(done.stdout)

    def calls(self) -> list[list[str]]:
        return [json.loads(line) for line in self.log.read_text().splitlines()]


def by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {check["name"]: check for check in report["checks"]}


@pytest.fixture
def preflight(tmp_path: Path) -> Preflight:
    return Preflight(tmp_path)
