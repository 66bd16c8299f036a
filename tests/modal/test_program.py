"""The real Pulumi program under mocks for each modal stack file, as for the Kubernetes stacks."""

from __future__ import annotations

import asyncio
import base64
import json

import pulumi
import pytest
from pulumi.runtime import rpc

from components import program
from components.config import PROJECT
from components.modal_app import AppSpec, source_hash
from components.modal_target import ModalAppProvider, ModalSecretProvider, secret_env
from components.stackfile import load_stack, read_raw, stack_names
from tests.infra.pulumi_harness import Declared, RecordingMocks, config_for_pulumi, run_program
from tests.modal.fake_modal import RecordingModalClient
from tests.modal.conftest import MODAL_STACKS, SECRET_VALUES, spec_for

SECRET_TYPE = "pulumi-python:dynamic/modal:Secret"
APP_TYPE = "pulumi-python:dynamic/modal:App"


def _one(declared: list[Declared], typ: str) -> Declared:
    found = [d for d in declared if d.typ == typ]
    assert len(found) == 1, [d.typ for d in declared]
    return found[0]


class ProviderMocks(RecordingMocks):
    """Mocks that answer the two Modal resources by running their providers on the fake seam."""

    def __init__(self, fake: RecordingModalClient) -> None:
        super().__init__()
        self.fake = fake

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict]:
        name, state = super().new_resource(args)
        inputs = dict(args.inputs)  # secret inputs stay wrapped, as the engine sends them
        if args.typ == SECRET_TYPE:
            result = ModalSecretProvider(self.fake).create(inputs)
        elif args.typ == APP_TYPE:
            result = ModalAppProvider(self.fake).create(inputs)
        else:
            return name, state
        return result.id, result.outs


def _up(stack: str, fake: RecordingModalClient) -> dict:
    """`pulumi up -s <stack>` with the providers on the fake seam: the stack outputs, resolved."""
    asyncio.set_event_loop(asyncio.new_event_loop())
    pulumi.runtime.set_mocks(ProviderMocks(fake), project=PROJECT, stack=stack, preview=False)
    pulumi.runtime.set_all_config(
        config_for_pulumi(read_raw(stack), SECRET_VALUES), secret_keys=[f"{PROJECT}:{k}" for k in SECRET_VALUES]
    )
    exported: dict = {}
    resolved: dict = {}
    real_export = pulumi.export
    pulumi.export = lambda name, value: exported.__setitem__(name, value)  # type: ignore[assignment]

    @pulumi.runtime.test
    def run():
        program.main()
        return pulumi.Output.all(**{k: pulumi.Output.from_input(v) for k, v in exported.items()}).apply(
            resolved.update
        )

    try:
        run()
    finally:
        pulumi.export = real_export
    return resolved


@pytest.fixture(scope="module", params=MODAL_STACKS)
def stack(request) -> tuple[str, list[Declared]]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MODAL_TOKEN_ID", "ak-test")
        env.setenv("MODAL_TOKEN_SECRET", "as-test")
        return request.param, run_program(request.param, secrets=SECRET_VALUES)


def test_the_shipped_modal_stacks_are_modal_dev_and_prod():
    assert {s for s in stack_names() if load_stack(s).target == "modal"} == set(MODAL_STACKS)


def test_program_declares_the_secret_then_the_app_for_the_stack_spec(stack):
    name, declared = stack
    assert [d.typ for d in declared] == ["vllm-deploy:modal:Deployment", SECRET_TYPE, APP_TYPE]
    app = _one(declared, APP_TYPE)
    spec = spec_for(name)
    assert AppSpec.from_dict(app.plain("spec")) == spec
    assert app.plain("spec_hash") == spec.digest and app.plain("source_hash") == source_hash()
    assert app.plain("app_name") == ("vllm-autoscale" if name == "modal-dev" else "vllm-llama70b")
    secret = _one(declared, SECRET_TYPE)
    assert secret.plain("name") == f"vllm-secrets-{name}"  # the stack's own secret


def test_secret_values_are_secret_inputs_and_nowhere_else(stack):
    _, declared = stack
    secret = _one(declared, SECRET_TYPE)
    assert secret.is_secret("values")
    assert secret.plain("values") == secret_env(SECRET_VALUES)
    for resource in declared:
        for key, value in resource.inputs.items():
            if rpc.is_rpc_secret(value):
                continue
            text = json.dumps(value, default=str)
            for secret_value in SECRET_VALUES.values():
                assert secret_value not in text, f"{resource.name}.{key}"


def test_pickled_providers_carry_no_secret(stack):
    _, declared = stack
    for resource in declared:
        if "__provider" not in resource.inputs:
            continue
        assert resource.is_secret("__provider")  # Pulumi's default; and it holds none anyway:
        pickled = base64.b64decode(resource.plain("__provider"))
        for secret_value in SECRET_VALUES.values():
            assert secret_value.encode() not in pickled


@pytest.mark.parametrize("name", MODAL_STACKS)
def test_up_deploys_through_the_seam_and_outputs_the_urls_without_secrets(name, modal_token):
    fake = RecordingModalClient()
    outputs = _up(name, fake)
    spec = spec_for(name)
    assert fake.methods() == ["upsert_secret", "deploy"]  # the secret exists before the app is deployed
    assert fake.calls[0][1]["values"] == secret_env(SECRET_VALUES)
    entry = "serve-wrapper" if name == "modal-dev" else "serve-vllm"
    assert outputs["app_url"] == f"https://acme--{spec.app_name}-{entry}.modal.run"
    assert outputs["openai_base_url"] == outputs["app_url"] + "/v1"
    assert outputs["vllm_url"] == f"https://acme--{spec.app_name}-serve-vllm.modal.run"
    assert outputs["modal_app"] == spec.app_name
    assert outputs["gpu"] == ("A100-80GB:1" if name == "modal-dev" else "A100-80GB:2")
    assert outputs["scale_to_zero_after_seconds"] == (120 if name == "modal-dev" else 900)
    assert {"app_url", "openai_base_url", "vllm_url", "served_model", "modal_secret", "logs_command"} <= set(outputs)
    text = json.dumps(outputs, default=str)
    for secret_value in SECRET_VALUES.values():
        assert secret_value not in text


def test_missing_vllm_key_stops_the_program_before_any_resource():
    with pytest.raises(Exception, match="vllmApiKey"):
        run_program("modal-dev", secrets={"hfToken": "hf"})


def test_a_spec_modal_would_refuse_is_a_clear_program_error():
    image = "vllm/vllm-openai@sha256:" + "a" * 64
    with pytest.raises(Exception, match="modal.vllmVersion"):
        run_program("modal-prod", secrets=SECRET_VALUES, overrides={"vllm": {"image": image}})


def test_up_without_a_modal_token_stops_before_any_resource(no_modal_token):
    with pytest.raises(pulumi.RunError, match="no Modal token") as error:
        run_program("modal-dev", secrets=SECRET_VALUES)
    assert "modal token new" in str(error.value)


def test_preview_needs_no_modal_token(no_modal_token):
    asyncio.set_event_loop(asyncio.new_event_loop())
    mocks = RecordingMocks()
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack="modal-dev", preview=True)
    pulumi.runtime.set_all_config(
        config_for_pulumi(read_raw("modal-dev"), SECRET_VALUES), secret_keys=[f"{PROJECT}:{k}" for k in SECRET_VALUES]
    )
    pulumi.runtime.test(program.main)()
    assert [d.typ for d in mocks.declared][1:] == [SECRET_TYPE, APP_TYPE]
