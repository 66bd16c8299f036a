"""`vllm-deploy render STACK`: the Kubernetes objects `pulumi up` would create."""

from __future__ import annotations

import sys

import typer

from components.cli.common import DEFAULT_STACKS_DIR, StackArg, StacksDir, dump_yaml, fail, load
from components.targets import target_of


def render(stack: StackArg, stacks_dir: StacksDir = DEFAULT_STACKS_DIR) -> None:
    """Print the Kubernetes objects `pulumi up` would create, as multi-document YAML (secrets redacted)."""
    config = load(stack, stacks_dir)
    objects = target_of(config).objects(config)
    if objects is None:
        raise fail(f"stack {stack} targets {config.target}; render shows Kubernetes objects")
    sys.stdout.write(dump_yaml(objects))


def register(app: typer.Typer) -> None:
    app.command()(render)
