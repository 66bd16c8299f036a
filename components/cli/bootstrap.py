"""`vllm-deploy bootstrap`: create the team's stacks once (logic in components/bootstrap.py)."""

from __future__ import annotations

import typer

from components.bootstrap import bootstrap_command


def register(app: typer.Typer) -> None:
    app.command("bootstrap")(bootstrap_command)
