"""A copy of the project (as a git repository) and a stand-in `pulumi` on PATH, for each test."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STANDIN = Path(__file__).with_name("standin_pulumi.py")


@dataclass
class Project:
    root: Path
    bin: Path
    home: Path
    log: Path
    backend: Path

    def env(self, **extra: str) -> dict[str, str]:
        """A clean environment: no Pulumi login, no passphrase, unless a test gives one."""
        keep = {k: v for k, v in os.environ.items() if not k.startswith(("PULUMI_", "MAKE", "MFLAGS"))}
        return {
            **keep,
            "PATH": f"{self.bin}{os.pathsep}{keep['PATH']}",
            "HOME": str(self.home),
            "STANDIN_LOG": str(self.log),
            "STANDIN_BACKEND": str(self.backend),
            **extra,
        }

    def calls(self) -> list[dict]:
        return [json.loads(line) for line in self.log.read_text().splitlines()] if self.log.exists() else []

    def changed(self) -> list[str]:
        """Tracked files that differ from the commit (what a developer would commit by accident)."""
        out = subprocess.run(["git", "diff", "--name-only"], cwd=self.root, capture_output=True, text=True, check=True)
        return out.stdout.split()

    def tracked_text(self) -> str:
        files = subprocess.run(["git", "ls-files"], cwd=self.root, capture_output=True, text=True, check=True)
        return "".join((self.root / name).read_text() for name in files.stdout.split() if (self.root / name).is_file())

    def stack_file(self, stack: str) -> dict:
        import yaml

        return yaml.safe_load((self.root / "stacks" / f"Pulumi.{stack}.yaml").read_text())

    def seed_backend(self, *stacks: str) -> None:
        self.backend.write_text(json.dumps({"stacks": list(stacks), "current": None}))


@pytest.fixture
def project(tmp_path: Path) -> Project:
    root = tmp_path / "repo"
    root.mkdir()
    for name in ("Makefile", "Pulumi.yaml", "pyproject.toml", ".gitignore"):
        shutil.copy2(ROOT / name, root / name)
    shutil.copytree(ROOT / "stacks", root / "stacks")
    shutil.copytree(ROOT / ".ci", root / ".ci")
    git = ["git", "-c", "user.email=t@example.invalid", "-c", "user.name=t", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q"], cwd=root, check=True)
    subprocess.run([*git, "add", "."], cwd=root, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "copy"], cwd=root, check=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    pulumi = bin_dir / "pulumi"
    pulumi.write_text(f"#!{sys.executable}\n" + STANDIN.read_text())
    pulumi.chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()
    return Project(root, bin_dir, home, tmp_path / "pulumi-calls.jsonl", tmp_path / "backend.json")
