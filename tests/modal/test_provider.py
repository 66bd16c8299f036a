"""The dynamic providers' create/diff/update/delete, in-process, against the recording fake seam."""

from __future__ import annotations

import asyncio
import functools
import json
import socket

import modal
import pytest
from pulumi.runtime import rpc

from components.modal_app import source_hash
from components.modal_target import (
    CREDENTIALS_HELP,
    ModalAppProvider,
    ModalCredentialsMissing,
    ModalSdkClient,
    ModalSecretProvider,
    app_inputs,
    modal_credentials_present,
    secret_env,
    secret_resource_options,
)
from tests.modal.conftest import SECRET_VALUES, spec_for
from tests.modal.fake_modal import RecordingModalClient


def _secret_props(name: str = "vllm-secrets-modal-dev", **overrides: str) -> dict:
    # As the engine hands a secret input to a dynamic provider: wrapped.
    return {"name": name, "values": rpc.wrap_rpc_secret(secret_env({**SECRET_VALUES, **overrides}))}


@functools.lru_cache(maxsize=None)
def _source_hash() -> str:
    return source_hash()


def _app_props(stack: str = "modal-dev", secret_version: int = 1, **changes) -> dict:
    props = app_inputs(spec_for(stack), _source_hash(), secret_version)
    props.update(changes)
    return {"__provider": "<pickled provider>", **props}


def _no_secret_in(data) -> None:
    text = json.dumps(data, default=str)
    for value in SECRET_VALUES.values():
        assert value not in text


# ------------------------------------------------------------------- secret


def test_secret_create_update_delete(modal_token):
    fake = RecordingModalClient()
    provider = ModalSecretProvider(fake)

    created = provider.create(_secret_props())
    assert created.id == "vllm-secrets-modal-dev"
    assert fake.calls[-1] == ("upsert_secret", {"name": "vllm-secrets-modal-dev", "values": secret_env(SECRET_VALUES)})
    # The old deployments' keys and the ones vLLM and the wrapper read.
    assert fake.calls[-1][1]["values"]["VLLM_SERVER_API_KEY"] == fake.calls[-1][1]["values"]["VLLM_API_KEY"]
    assert fake.calls[-1][1]["values"]["HUGGING_FACE_HUB_TOKEN"] == SECRET_VALUES["hfToken"]
    olds = created.outs
    assert olds["created"] is True  # it did not exist: the stack made it, so the stack deletes it
    assert olds["version"] == 1 and olds["keys"] == sorted(secret_env(SECRET_VALUES))
    assert rpc.is_rpc_secret(olds["values"])  # stored as a secret output
    # State hands old outputs back as they were stored: wrapped or not, the same values are no change.
    assert provider.diff("vllm-secrets-modal-dev", {**olds, "values": rpc.unwrap_rpc_secret(olds["values"])}, _secret_props()).changes is False

    assert provider.diff("vllm-secrets-modal-dev", olds, _secret_props()).changes is False
    rotated = _secret_props(vllmApiKey="vllm-SECRET-rotated")
    diff = provider.diff("vllm-secrets-modal-dev", olds, rotated)
    assert diff.changes is True and not diff.replaces
    renamed = provider.diff("vllm-secrets-modal-dev", olds, _secret_props(name="other-secrets"))
    assert renamed.replaces == ["name"]

    updated = provider.update("vllm-secrets-modal-dev", olds, rotated)
    assert updated.outs["version"] == 2 and updated.outs["created"] is True
    assert fake.calls[-1][1]["values"]["VLLM_API_KEY"] == "vllm-SECRET-rotated"

    provider.delete("vllm-secrets-modal-dev", updated.outs)
    assert fake.calls[-1] == ("delete_secret", {"name": "vllm-secrets-modal-dev"})
    assert fake.methods() == ["upsert_secret", "upsert_secret", "delete_secret"]


def test_each_stack_has_its_own_secret_by_default():
    # Two stacks writing one secret overwrote each other's keys; destroying one deleted the other's.
    assert spec_for("modal-dev").secret_name == "vllm-secrets-modal-dev"
    assert spec_for("modal-prod").secret_name == "vllm-secrets-modal-prod"


def test_an_adopted_secret_gets_the_stack_keys_but_is_never_deleted(modal_token):
    """`modal.secretName: vllm-secrets` names a secret made before the stack (the old shared one)."""
    fake = RecordingModalClient(secrets={"vllm-secrets": {"VLLM_API_KEY": "old", "MY_OWN_KEY": "x"}})
    provider = ModalSecretProvider(fake)
    created = provider.create(_secret_props("vllm-secrets"))
    assert created.outs["created"] is False
    assert fake.secrets["vllm-secrets"]["VLLM_API_KEY"] == SECRET_VALUES["vllmApiKey"]
    updated = provider.update("vllm-secrets", created.outs, _secret_props("vllm-secrets", vllmApiKey="rotated"))
    assert updated.outs["created"] is False

    provider.delete("vllm-secrets", updated.outs)
    assert "delete_secret" not in fake.methods() and "vllm-secrets" in fake.secrets


def test_state_from_before_the_created_flag_never_deletes(modal_token):
    """A stack deployed before this provider recorded `created` may hold the shared `vllm-secrets`."""
    fake = RecordingModalClient(secrets={"vllm-secrets": {}})
    olds = {"name": "vllm-secrets", "values": {}, "keys": [], "version": 3}
    ModalSecretProvider(fake).delete("vllm-secrets", olds)
    assert fake.methods() == [] and "vllm-secrets" in fake.secrets


def test_unset_optional_secrets_become_empty_values():
    env = secret_env({"vllmApiKey": "k", "hfToken": None})
    assert env["HF_TOKEN"] == "" and env["VLLM_WRAPPER_API_KEY"] == "" and env["VLLM_API_KEY"] == "k"


def test_secret_values_stay_secret_outputs_in_state():
    assert secret_resource_options().additional_secret_outputs == ["values"]


# ---------------------------------------------------------------------- app


@pytest.mark.parametrize("stack", ["modal-dev", "modal-prod"])
def test_app_create_deploys_the_stack_spec_and_outputs_urls(modal_token, stack):
    fake = RecordingModalClient()
    provider = ModalAppProvider(fake)
    spec = spec_for(stack)
    result = provider.create(_app_props(stack))
    assert result.id == spec.app_name
    assert fake.calls == [("deploy", {"spec": spec.to_dict()})]
    entry = "serve-wrapper" if spec.architecture == "autoscale" else "serve-vllm"
    assert result.outs["url"] == f"https://acme--{spec.app_name}-{entry}.modal.run"
    assert result.outs["openai_base_url"] == result.outs["url"] + "/v1"
    assert result.outs["urls"]["serve_vllm"].endswith("-serve-vllm.modal.run")
    assert "__provider" not in result.outs  # the provider host adds it back itself
    _no_secret_in(result.outs)


def test_app_diff_redeploys_only_for_spec_source_or_secret_changes(modal_token):
    fake = RecordingModalClient()
    provider = ModalAppProvider(fake)
    olds = provider.create(_app_props()).outs
    fake.calls.clear()

    assert provider.diff("vllm-autoscale", olds, _app_props()).changes is False
    for change in ({"spec_hash": "0" * 64}, {"source_hash": "f" * 64}, {"secret_version": 2}):
        diff = provider.diff("vllm-autoscale", olds, _app_props(**change))
        assert diff.changes is True and not diff.replaces, change
    # Unknown during preview (the secret is being updated): a redeploy is planned.
    assert provider.diff("vllm-autoscale", olds, _app_props(secret_version="04da6b54-80e4-46f7-96ec-b56ff0331ba9")).changes
    renamed = provider.diff("vllm-autoscale", olds, _app_props(app_name="vllm-other"))
    assert renamed.replaces == ["app_name"] and renamed.delete_before_replace is False
    # Another idle timeout changes the spec, hence its hash.
    prod = _app_props("modal-prod")
    assert provider.diff("vllm-autoscale", olds, {**_app_props(), "spec_hash": prod["spec_hash"]}).changes
    assert fake.calls == []  # diff never talks to Modal


def test_app_update_redeploys_and_delete_stops(modal_token):
    fake = RecordingModalClient()
    provider = ModalAppProvider(fake)
    olds = provider.create(_app_props()).outs
    news = _app_props(source_hash="e" * 64)
    updated = provider.update("vllm-autoscale", olds, news)
    assert updated.outs["source_hash"] == "e" * 64 and updated.outs["url"]
    provider.delete("vllm-autoscale", updated.outs)
    assert fake.methods() == ["deploy", "deploy", "stop"]
    assert fake.calls[-1] == ("stop", {"app_name": "vllm-autoscale"})


def test_check_rejects_a_spec_modal_would_refuse():
    news = _app_props()
    news["spec"] = {**news["spec"], "gpu_count": 12}
    result = ModalAppProvider(RecordingModalClient()).check({}, news)
    assert [f.property for f in result.failures] == ["spec"]
    assert ModalAppProvider(RecordingModalClient()).check({}, _app_props()).failures == []


# -------------------------------------------------------------- credentials


def test_missing_token_is_one_clear_error_before_any_call(no_modal_token):
    fake = RecordingModalClient()
    for call in (
        lambda: ModalSecretProvider(fake).create(_secret_props()),
        lambda: ModalAppProvider(fake).create(_app_props()),
        lambda: ModalAppProvider(fake).update("x", _app_props(), _app_props()),
        lambda: ModalAppProvider(fake).delete("x", _app_props()),
    ):
        with pytest.raises(ModalCredentialsMissing) as error:
            call()
        assert str(error.value) == CREDENTIALS_HELP
    assert "modal token new" in CREDENTIALS_HELP and "MODAL_TOKEN_ID" in CREDENTIALS_HELP
    assert fake.calls == []


def test_credentials_are_found_where_the_modal_sdk_looks(tmp_path):
    config = tmp_path / ".modal.toml"
    assert not modal_credentials_present({}, home=tmp_path)
    assert modal_credentials_present({"MODAL_TOKEN_ID": "ak", "MODAL_TOKEN_SECRET": "as"}, home=tmp_path)
    assert not modal_credentials_present({"MODAL_TOKEN_ID": "ak"}, home=tmp_path)
    config.write_text('[work]\ntoken_id = "ak"\ntoken_secret = "as"\nactive = true\n[other]\ntoken_id = "x"\n')
    assert modal_credentials_present({}, home=tmp_path)
    assert not modal_credentials_present({"MODAL_PROFILE": "other"}, home=tmp_path)
    assert modal_credentials_present({"MODAL_CONFIG_PATH": str(config)}, home=tmp_path / "elsewhere")


def test_real_sdk_seam_without_a_token_fails_fast_with_modals_auth_error(no_modal_token, monkeypatch):
    """The real seam builds the app and reaches Modal's client, which refuses before any network call."""
    monkeypatch.setattr(modal.config, "_user_config", {})  # whatever this machine's ~/.modal.toml says
    attempts: list[object] = []

    def no_network(*args: object, **kwargs: object) -> None:
        attempts.append(args)
        raise ConnectionRefusedError("this test allows no network call")

    # "Before any network call" is the criterion, not a time: any lookup or connect is recorded.
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket.socket, "connect_ex", no_network)
    client = ModalSdkClient()
    spec = spec_for("modal-dev")
    for call in (
        lambda: client.deploy(spec),
        lambda: client.upsert_secret("vllm-secrets", {"VLLM_API_KEY": "x"}),
        lambda: client.stop("vllm-autoscale"),
    ):
        with pytest.raises(modal.exception.AuthError):
            asyncio.run(call())
    assert attempts == []


def test_the_real_seam_calls_exist_in_this_modal_sdk(prod):
    """Every SDK call ModalSdkClient makes, with its async form (no live call made)."""
    assert modal.__version__ == "1.6.4"
    assert callable(modal.Secret.objects.create.aio) and callable(modal.Secret.objects.delete.aio)
    assert callable(modal.Secret.from_name("x").update.aio)
    assert callable(modal.App.lookup.aio)
    _, module = prod
    assert callable(module.app.deploy.aio) and callable(module.app.stop.aio)
    assert callable(module.serve_vllm.get_web_url.aio)
    deployed = modal.Function.from_name("vllm-llama70b", "download_weights")  # predownload()
    assert callable(deployed.hydrate.aio) and callable(deployed.remote.aio)
