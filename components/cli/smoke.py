"""`vllm-deploy smoke STACK`: the checks and the command live in components/smoke.py."""

from __future__ import annotations

import typer

from components.smoke import smoke_command


def register(app: typer.Typer) -> None:
    app.command("smoke")(smoke_command)
