"""`vllm-deploy` run in the test process, answering as the console script's process would.

    done = vllm_deploy("check", "dev", cwd=tmp_path, env={"PATH": ...})
    assert done.returncode == 1 and "did you mean" in done.stderr

Starting the console script costs a Python start and the import of components/, typer and the
Pulumi SDK (about a second of CPU, several on a busy machine) for every call; in-process it is
paid once per session. The answer is a ``subprocess.CompletedProcess`` with the exit status and
what the command wrote to stdout and stderr, so a test reads it the same either way.
``tests/infra/test_cli.py`` holds the two side by side on the same commands.

What the process would have that this has not: its own environment (``env`` is applied to
``os.environ`` for the call and undone after; ``None`` unsets a variable), its own working
directory (``cwd``, changed for the call; but what is read at import, such as the default
``--stacks-dir`` from the directory the process starts in, follows the test process's
directory: tests/infra/test_where_you_stand.py runs the console script), and a fresh module state. An exception the command
does not handle is raised into the test (the process would print the traceback and exit 1), so it
fails loudly either way. Tests whose point is the process itself (a signal, the installed entry
point, `make` calling it) keep running it as a subprocess.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from typer.testing import CliRunner

__all__ = ["CONSOLE_SCRIPT", "vllm_deploy"]

CONSOLE_SCRIPT = Path(sys.executable).with_name("vllm-deploy")  # what `pip install -e .` installed


def vllm_deploy(
    *args: str, cwd: Path | None = None, env: Mapping[str, str | None] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``vllm-deploy ARGS`` in-process; ``cwd`` and ``env`` as the process would get them."""
    from components.cli import app  # the object the console script calls (components.cli:main)

    runner = CliRunner()
    with contextlib.chdir(cwd) if cwd is not None else contextlib.nullcontext():
        result = runner.invoke(app, list(args), env=dict(env or {}), catch_exceptions=False, prog_name="vllm-deploy")
    return subprocess.CompletedProcess(["vllm-deploy", *args], result.exit_code, result.stdout, result.stderr)
