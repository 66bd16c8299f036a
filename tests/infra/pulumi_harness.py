"""Run the real Pulumi program in-process under mocks and return what it declared."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi.runtime import rpc

from components import program
from components.stackfile import read_raw

PROJECT = "vllm-deploy"
# Stand-ins for the secrets a user sets with `pulumi config set --secret`.
TEST_SECRETS = {"hfToken": "hf_test_token_value", "vllmApiKey": "vllm-test-key", "wrapperApiKey": "wrapper-test-key"}


@dataclass
class Declared:
    typ: str
    name: str
    inputs: dict[str, Any]
    provider: str | None = None  # the provider reference (URN::id) the engine would use
    # Options as the program passed them (mocks don't see options; a stack transformation does).
    opts: pulumi.ResourceOptions | None = None

    @property
    def kind(self) -> str:
        return self.typ.rsplit(":", 1)[-1]

    def plain(self, key: str) -> Any:
        value = self.inputs.get(key)
        return rpc.unwrap_rpc_secret(value) if rpc.is_rpc_secret(value) else value

    def is_secret(self, key: str) -> bool:
        return rpc.is_rpc_secret(self.inputs.get(key))


class RecordingMocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.declared: list[Declared] = []

        self.options: dict[tuple[str, str], pulumi.ResourceOptions] = {}

    def record_options(self, args: pulumi.ResourceTransformationArgs) -> None:
        self.options[(args.type_, args.name)] = args.opts

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict]:
        opts = self.options.get((args.typ, args.name))
        self.declared.append(Declared(args.typ, args.name, dict(args.inputs), args.provider or None, opts))
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict:
        return {}


def config_for_pulumi(raw: dict[str, Any], secrets: dict[str, str]) -> dict[str, str]:
    """Stack-file values as the Pulumi engine hands them to a program: strings, objects as JSON."""
    config = {}
    for key, value in {**raw, **secrets}.items():
        config[f"{PROJECT}:{key}"] = value if isinstance(value, str) else json.dumps(value)
    return config


def run_program(
    stack: str,
    *,
    secrets: dict[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> list[Declared]:
    """Everything `pulumi up -s <stack>` would declare, as recorded by the mocks."""
    secrets = dict(TEST_SECRETS if secrets is None else secrets)
    raw = {**read_raw(stack), **(overrides or {})}
    asyncio.set_event_loop(asyncio.new_event_loop())
    mocks = RecordingMocks()
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False)
    pulumi.runtime.set_all_config(
        config_for_pulumi(raw, secrets), secret_keys=[f"{PROJECT}:{k}" for k in secrets]
    )

    @pulumi.runtime.test
    def run() -> None:
        pulumi.runtime.register_stack_transformation(mocks.record_options)
        program.main()

    run()
    return mocks.declared


def stack_outputs(stack: str, *, secrets: dict[str, str] | None = None) -> dict[str, Any]:
    """What `pulumi stack output` shows after `pulumi up -s <stack>`."""
    exported: dict[str, Any] = {}
    real_export = pulumi.export
    pulumi.export = lambda name, value: exported.__setitem__(name, value)  # type: ignore[assignment]
    try:
        run_program(stack, secrets=secrets)
    finally:
        pulumi.export = real_export
    return exported
