"""Every shell script of the project passes Debian's `shellcheck` (installed by .ci/install-shellcheck)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHELLS = ("bash", "sh")


def is_shell_script(path: Path) -> bool:
    if path.suffix == ".sh":
        return True
    with path.open("rb") as file:
        first = file.readline().decode(errors="replace")
    return first.startswith("#!") and first.split("/")[-1].split()[-1] in SHELLS


def shell_scripts() -> list[Path]:
    candidates = [p for folder in ("scripts", ".ci") for p in sorted((REPO / folder).iterdir()) if p.is_file()]
    return [p for p in candidates if is_shell_script(p)]


def test_the_quick_start_scripts_are_found() -> None:
    names = {p.relative_to(REPO).as_posix() for p in shell_scripts()}
    assert {"scripts/up", "scripts/down", "scripts/image", "scripts/lib.sh", ".ci/install-shellcheck", ".ci/pulumi-stack"} <= names


@pytest.mark.parametrize("script", shell_scripts(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_shellcheck_is_clean(script: Path) -> None:
    if shutil.which("shellcheck") is None:
        pytest.fail("shellcheck is not installed: bash .ci/install-shellcheck (make test runs it)")
    # -x follows `source` directives (lib.sh, tools.env); paths in them are relative to the checkout.
    checked = subprocess.run(["shellcheck", "-x", str(script.relative_to(REPO))], cwd=REPO,
                             capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_shellcheck_flags_what_it_should(tmp_path: Path) -> None:
    """The check above is not vacuous: an unquoted expansion is reported (SC2086)."""
    if shutil.which("shellcheck") is None:
        pytest.fail("shellcheck is not installed: bash .ci/install-shellcheck (make test runs it)")
    script = tmp_path / "bad"
    script.write_text('#!/usr/bin/env bash\nrm -rf $1/build\n')
    checked = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True, check=False)
    assert checked.returncode != 0 and "SC2086" in checked.stdout
