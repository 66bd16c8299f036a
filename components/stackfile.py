"""Reading `stacks/Pulumi.<env>.yaml` without the Pulumi CLI (for `vllm-deploy` and tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from components.config import ConfigError, StackConfig, parse_stack_config, strip_project_prefix
from components.projectdir import shown, stacks_dir_for

# The default --stacks-dir: the project's where the command starts in one, else the checkout's.
STACKS_DIR = stacks_dir_for(Path.cwd())


def stack_path(stack: str, stacks_dir: Path = STACKS_DIR) -> Path:
    return stacks_dir / f"Pulumi.{stack}.yaml"


def stack_names(stacks_dir: Path = STACKS_DIR) -> list[str]:
    return sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in stacks_dir.glob("Pulumi.*.yaml"))


def read_raw(stack: str, stacks_dir: Path = STACKS_DIR) -> dict[str, Any]:
    """The stack's `vllm-deploy:*` keys, prefix removed; `{secure: …}` values stay opaque."""
    path = stack_path(stack, stacks_dir)
    if not path.is_file():
        known = ", ".join(stack_names(stacks_dir)) or "none"
        raise ConfigError([f"no stack file {path.name} in {shown(stacks_dir)} (stacks: {known})"])
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError([f"not valid YAML: {error}"], shown(path)) from None
    return strip_project_prefix(document.get("config") or {})


def load_stack(stack: str, stacks_dir: Path = STACKS_DIR, *, require_secrets: bool = False) -> StackConfig:
    """The typed config of a stack file. Secrets are usually set per machine, so not required here."""
    return parse_stack_config(
        read_raw(stack, stacks_dir),
        require_secrets=require_secrets,
        source=shown(stack_path(stack, stacks_dir)),
    )
