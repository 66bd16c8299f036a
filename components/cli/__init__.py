"""`vllm-deploy`: what a user runs beside `pulumi` — no cluster and no Pulumi CLI needed.

One module per command; each module's `register(app)` adds its command. Command logic lives
in plain functions (testable without a terminal), the output formatting beside them.
To add a command: a module here with `register`, and its name in `COMMANDS`.
"""

from __future__ import annotations

import typer

from components.cli import bootstrap, check, cost, preflight, render, smoke, values

app = typer.Typer(
    help="Deploy vLLM to Kubernetes or Modal with Pulumi: render, check and operate stacks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# In the order `vllm-deploy --help` lists them.
COMMANDS = (render, check, cost, preflight, smoke, values, bootstrap)
for command in COMMANDS:
    command.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
