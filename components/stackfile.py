"""Reading `stacks/Pulumi.<env>.yaml` without the Pulumi CLI (for `vllm-deploy` and tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from components.config import ConfigError, StackConfig, parse_stack_config, strip_project_prefix

STACKS_DIR = Path(__file__).resolve().parent.parent / "stacks"


def stack_path(stack: str, stacks_dir: Path = STACKS_DIR) -> Path:
    return stacks_dir / f"Pulumi.{stack}.yaml"


def stack_names(stacks_dir: Path = STACKS_DIR) -> list[str]:
    return sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in stacks_dir.glob("Pulumi.*.yaml"))


def read_raw(stack: str, stacks_dir: Path = STACKS_DIR) -> dict[str, Any]:
    """The stack's `vllm-deploy:*` keys, prefix removed; `{secure: …}` values stay opaque."""
    path = stack_path(stack, stacks_dir)
    if not path.is_file():
        known = ", ".join(stack_names(stacks_dir)) or "none"
        raise ConfigError([f"no stack file {path.name} in {stacks_dir} (stacks: {known})"])
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError([f"not valid YAML: {error}"], str(path)) from None
    return strip_project_prefix(document.get("config") or {})


def load_stack(stack: str, stacks_dir: Path = STACKS_DIR, *, require_secrets: bool = False) -> StackConfig:
    """The typed config of a stack file. Secrets are usually set per machine, so not required here."""
    return parse_stack_config(
        read_raw(stack, stacks_dir),
        require_secrets=require_secrets,
        source=str(stack_path(stack, stacks_dir).relative_to(stacks_dir.parent)),
    )
