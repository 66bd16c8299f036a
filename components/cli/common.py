"""What every command shares: the stack argument, loading a stack file, printing YAML."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from components.config import ConfigError, StackConfig
from components.stackfile import STACKS_DIR, load_stack

StackArg = Annotated[str, typer.Argument(help="Stack name: stacks/Pulumi.<STACK>.yaml")]
StacksDir = Annotated[Path, typer.Option("--stacks-dir", help="Where the stack files live")]
DEFAULT_STACKS_DIR = STACKS_DIR


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print `error: message` on stderr; raise what this returns."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def load(stack: str, stacks_dir: Path) -> StackConfig:
    """The stack's typed config, or exit 2 with one line per problem."""
    try:
        return load_stack(stack, stacks_dir)
    except ConfigError as error:
        raise fail(str(error)) from None


def dump_yaml(documents: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(documents, sort_keys=False, explicit_start=True)
