"""A pretend newcomer's machine for `make up` / `make down`: a copy of the checkout in a temp dir,
stand-ins (standin.py) for docker, kind, kubectl, curl, pulumi, minikube and k3d on a PATH that
holds nothing else but the system's basic tools, a temp HOME and KUBECONFIG, and a "network"
that serves release files the test builds itself. Nothing outside the temp dir is touched.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
STANDIN = Path(__file__).with_name("standin.py")
# What the Makefile and scripts/ may run from the system; everything else is a stand-in or absent.
SYSTEM_TOOLS = ["bash", "sh", "env", "dirname", "basename", "date", "mkdir", "cat", "cut",
                "head", "tail", "tr", "sed", "awk", "grep", "mv", "rm", "ln", "chmod", "tar", "gzip",
                "sha256sum", "uname", "touch", "cp", "ls", "id", "sort", "wc", "mktemp", "tee", "sleep"]
CHECKOUT_FILES = ["Makefile", "pyproject.toml", "Pulumi.yaml", "__main__.py", "scripts", ".ci", "stacks",
                  "wrapper/Dockerfile"]
GiB = 1024**3
MAKE = shutil.which("make") or "make"


def tools_env() -> dict[str, str]:
    """scripts/tools.env, the one place the versions and URLs are pinned."""
    pins = {}
    for line in (REPO / "scripts" / "tools.env").read_text().splitlines():
        if line and not line.startswith("#"):
            name, value = line.split("=", 1)
            pins[name] = value
    return pins


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def host_platform() -> tuple[str, str]:
    os_name = {"Linux": "linux", "Darwin": "darwin"}[platform.system()]
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}[platform.machine()]
    return os_name, arch


@dataclass
class Result:
    status: int
    output: str

    @property
    def last_line(self) -> str:
        return self.output.strip().splitlines()[-1]


class Machine:
    def __init__(self, tmp: Path, render_cache: Path) -> None:
        self.tmp = tmp
        self.render_cache = render_cache
        self.checkout = tmp / "checkout"
        self.bin = tmp / "bin"
        self.system = tmp / "system"
        self.venv = tmp / "venv"
        self.home = tmp / "home"
        self.releases = tmp / "releases"
        self.world_file = tmp / "world.json"
        self.log_file = tmp / "calls.jsonl"
        for directory in (self.bin, self.system, self.venv / "bin", self.home, self.releases):
            directory.mkdir(parents=True)
        for name in CHECKOUT_FILES:
            source, target = REPO / name, self.checkout / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(source, target)
        for tool in SYSTEM_TOOLS:
            found = shutil.which(tool)
            assert found, f"the test needs {tool} on this machine"
            (self.system / tool).symlink_to(found)
        # python3 (for .ci/pulumi-stack and the stand-ins): the interpreter running the tests,
        # not a version-manager shim that needs its manager on PATH.
        (self.system / "python3").symlink_to(os.path.realpath(sys.executable))
        # The project's venv, already installed (make's `install` step is up to date): its python
        # is the one running the tests; its vllm-deploy is real except for `smoke`.
        python = self.venv / "bin" / "python"
        python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
        python.chmod(0o755)
        (self.venv / "bin" / "vllm-deploy").symlink_to(STANDIN)
        (self.venv / ".installed").touch()  # after the copy of pyproject.toml: make sees it up to date
        self.log_file.touch()
        self.world: dict[str, Any] = {
            "network": True,
            "served": {},
            "docker": {"running": True, "mem_total": 16 * GiB, "images": []},
            "kube": {"current": "", "contexts": {}},
            "kind_clusters": [],
            "pulumi": {"version": "v3.272.0", "stacks": {}, "current": None},
            "smoke_exit": 0,
        }
        self.save()

    # --- the machine's state ------------------------------------------------------------------
    def save(self) -> None:
        self.world_file.write_text(json.dumps(self.world))

    def load(self) -> dict[str, Any]:
        self.world = json.loads(self.world_file.read_text())
        return self.world

    def install(self, *tools: str) -> None:
        """Put stand-ins for these tools on PATH (the newcomer has them installed)."""
        for tool in tools:
            (self.bin / tool).symlink_to(STANDIN)

    def add_context(self, name: str, *, reachable: bool = True, memory: str = "16Gi",
                    labels: dict[str, str] | None = None, current: bool = True) -> None:
        self.world["kube"]["contexts"][name] = {
            "reachable": reachable, "nodes": [{"memory": memory, "labels": labels or {}}], "images": []}
        if current:
            self.world["kube"]["current"] = name
        self.save()

    # --- the network: release files as the projects publish them -------------------------------
    def publish_releases(self) -> None:
        """Serve the pinned Pulumi, kind and kubectl releases of this platform, with their
        published checksum files (each binary inside is a stand-in)."""
        pins, (os_name, arch) = tools_env(), host_platform()
        pulumi_arch = "x64" if arch == "amd64" else arch
        archive = self.releases / f"pulumi-v{pins['PULUMI_VERSION']}-{os_name}-{pulumi_arch}.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            for name in ("pulumi", "pulumi-language-python"):
                info = tarfile.TarInfo(f"pulumi/{name}")
                data = STANDIN.read_bytes()
                info.size, info.mode = len(data), 0o755
                tar.addfile(info, io.BytesIO(data))
        checksums = self.releases / f"pulumi-{pins['PULUMI_VERSION']}-checksums.txt"
        checksums.write_text(f"{'0' * 64}  pulumi-v{pins['PULUMI_VERSION']}-windows-x64.zip\n"
                             f"{sha256(archive)}  {archive.name}\n")
        self.serve(f"{pins['PULUMI_BASE_URL']}/{archive.name}", archive)
        self.serve(f"{pins['PULUMI_BASE_URL']}/{checksums.name}", checksums)

        kind = self.releases / f"kind-{os_name}-{arch}"
        shutil.copy(STANDIN, kind)
        (self.releases / f"{kind.name}.sha256sum").write_text(f"{sha256(kind)}  {kind.name}\n")
        kind_url = f"{pins['KIND_BASE_URL']}/v{pins['KIND_VERSION']}/{kind.name}"
        self.serve(kind_url, kind)
        self.serve(kind_url + ".sha256sum", self.releases / f"{kind.name}.sha256sum")

        kubectl = self.releases / "kubectl"
        shutil.copy(STANDIN, kubectl)
        (self.releases / "kubectl.sha256").write_text(sha256(kubectl))
        kubectl_url = f"{pins['KUBECTL_BASE_URL']}/v{pins['KUBECTL_VERSION']}/bin/{os_name}/{arch}/kubectl"
        self.serve(kubectl_url, kubectl)
        self.serve(kubectl_url + ".sha256", self.releases / "kubectl.sha256")

    def serve(self, url: str, path: Path) -> None:
        self.world["served"][url] = str(path)
        self.save()

    def served_file(self, suffix: str) -> Path:
        return Path(next(path for url, path in self.world["served"].items() if url.endswith(suffix)))

    # --- running make ---------------------------------------------------------------------------
    def make(self, target: str, *extra: str, env: dict[str, str] | None = None) -> Result:
        env = {
            **(env or {}),
            "PATH": f"{self.bin}:{self.system}",
            "HOME": str(self.home),
            "KUBECONFIG": str(self.home / "kubeconfig"),
            "TMPDIR": str(self.tmp),
            "LANG": "C.UTF-8",
            "STANDIN_WORLD": str(self.world_file),
            "STANDIN_LOG": str(self.log_file),
            "REAL_VLLM_DEPLOY": str(Path(sys.executable).with_name("vllm-deploy")),
            "RENDER_CACHE": str(self.render_cache),
        }
        done = subprocess.run([MAKE, "--no-print-directory", target, f"VENV={self.venv}", *extra],
                              cwd=self.checkout, env=env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
        self.load()
        return Result(done.returncode, done.stdout)

    def calls(self, tool: str | None = None) -> list[dict[str, Any]]:
        records = [json.loads(line) for line in self.log_file.read_text().splitlines()]
        return [r for r in records if tool is None or r["tool"] == tool]

    def ran(self, tool: str, *args: str) -> bool:
        """A call of `tool` whose arguments start with `args`."""
        return any(call["args"][: len(args)] == list(args) for call in self.calls(tool))

    @property
    def tools(self) -> Path:
        return self.checkout / ".tools"
