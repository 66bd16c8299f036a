"""The Pulumi program: read the stack's config once, let its target declare it."""

from __future__ import annotations

import json
from typing import Any

import pulumi
from pulumi.runtime import config as runtime_config

from components.config import PROJECT, SECRET_KEYS, ConfigError, StackConfig, parse_stack_config, strip_project_prefix
from components.targets import target_of


def _decode(value: Any) -> Any:
    # Pulumi hands structured config values to the program as JSON text.
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def stack_config_from_pulumi() -> StackConfig:
    """Every `vllm-deploy:*` key of the running stack, validated before any resource exists."""
    everything = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    raw = {k: _decode(v) for k, v in strip_project_prefix(everything).items()}
    return parse_stack_config(raw, source=f"stack {pulumi.get_stack()}")


def secret_values() -> dict[str, pulumi.Output[str] | None]:
    config = pulumi.Config(PROJECT)
    return {key: config.get_secret(key) for key in SECRET_KEYS}


def main() -> None:
    try:
        config = stack_config_from_pulumi()
    except ConfigError as error:
        # RunError prints the message alone: one line per problem, no traceback.
        raise pulumi.RunError(f"invalid stack config\n{error}") from None

    outputs = target_of(config).deploy(PROJECT, config, secret_values())
    for key, value in outputs.items():
        pulumi.export(key, value)
