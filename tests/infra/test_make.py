"""The Makefile's habits: `make test` runs `make check` first, then every test serially; `make
test-fast` leaves out the tiers that need vLLM or checkov and runs on parallel workers; the linters
are pinned in the dev extra and configured in pyproject."""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def dry_run(target: str, *variables: str) -> list[str]:
    """The commands `make -n TARGET [NAME=VALUE...]` would run (install steps included), one per
    line, with the Makefile's defaults (FAST_WORKERS and FUZZ_SECONDS in the caller's environment left out)."""
    make = shutil.which("make")
    assert make, "GNU make is needed to run the project's targets"
    env = {k: v for k, v in os.environ.items() if k not in ("FAST_WORKERS", "FUZZ_SECONDS")}
    result = subprocess.run(
        [make, "-n", "-C", str(ROOT), target, *variables], capture_output=True, text=True, timeout=60, env=env
    )
    assert result.returncode == 0, result.stderr
    return [line.strip() for line in result.stdout.splitlines() if line.strip()]


def test_make_check_runs_ruff_lint_ruff_format_and_mypy_over_the_shipped_code() -> None:
    lines = dry_run("check")
    assert ".venv/bin/ruff check components wrapper" in lines
    assert ".venv/bin/ruff format --check components wrapper" in lines
    assert ".venv/bin/mypy" in lines


def test_make_test_runs_check_before_any_test() -> None:
    lines = dry_run("test")
    ruff = lines.index(".venv/bin/ruff check components wrapper")
    mypy = lines.index(".venv/bin/mypy")
    pytest_run = next(i for i, line in enumerate(lines) if line.endswith("-m pytest"))
    assert ruff < pytest_run and mypy < pytest_run


def test_make_test_fast_needs_neither_vllm_nor_checkov() -> None:
    lines = dry_run("test-fast")
    (run,) = [line for line in lines if ".venv/bin/python -m pytest" in line]
    assert run.startswith('FUZZ_SECONDS=5 .venv/bin/python -m pytest -m "not vllm and not checkov"'), run
    assert not [line for line in lines if "install-vllm" in line or "install-checkov" in line]


def test_make_test_fast_runs_on_parallel_workers_and_make_test_stays_serial() -> None:
    (fast,) = [line for line in dry_run("test-fast") if ".venv/bin/python -m pytest" in line]
    assert fast.endswith(" -n 4 --dist worksteal"), fast
    (two,) = [line for line in dry_run("test-fast", "FAST_WORKERS=2") if ".venv/bin/python -m pytest" in line]
    assert two.endswith(" -n 2 --dist worksteal"), two
    (full,) = [line for line in dry_run("test") if line.endswith("-m pytest")]
    assert " -n " not in full, full
    assert "FUZZ_SECONDS" not in full, full  # the whole fuzz budget (30 s)
    dev = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
    assert "pytest-xdist==3.8.0" in dev


def test_linters_are_pinned_and_configured() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    dev = project["project"]["optional-dependencies"]["dev"]
    for name in ("ruff", "mypy"):
        (pin,) = [d for d in dev if d.split("==")[0] == name]
        assert "==" in pin, pin
    tool = project["tool"]
    assert tool["mypy"]["files"] == ["components", "wrapper"]
    assert tool["ruff"]["line-length"] == 120
    pytest_options = tool["pytest"]["ini_options"]
    assert "--durations=15" in pytest_options["addopts"]
    assert {m.split(":")[0] for m in pytest_options["markers"]} == {"vllm", "checkov"}
