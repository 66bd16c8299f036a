"""`vllm-deploy values STACK`: the Helm values file that reproduces a Kubernetes stack."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from components.cli.common import DEFAULT_STACKS_DIR, StackArg, StacksDir, fail, load
from components.helm_values import values_yaml
from components.targets import target_of

SecretPlaceholders = Annotated[
    bool, typer.Option(help="Let the chart create the Secret, with <redacted> placeholders to replace")
]


def values(
    stack: StackArg, stacks_dir: StacksDir = DEFAULT_STACKS_DIR, secret_placeholders: SecretPlaceholders = False
) -> None:
    """Print the Helm values file that makes charts/vllm-deploy declare this stack's objects."""
    config = load(stack, stacks_dir)
    if target_of(config).objects(config) is None:
        raise fail(f"stack {stack} targets {config.target}; the Helm chart deploys to Kubernetes")
    sys.stdout.write(values_yaml(config, "placeholders" if secret_placeholders else "existing", stack))


def register(app: typer.Typer) -> None:
    app.command()(values)
