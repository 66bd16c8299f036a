"""`modal.predownload: true`: a `download_weights` function in the app, run once by `pulumi up` per
model and revision, so the first request does not wait for the download."""

from __future__ import annotations

import warnings

import pytest

from components.config import parse_stack_config
from components.modal_app import load_app
from components.modal_app.common import DOWNLOAD_TIMEOUT
from components.modal_app.spec import HF_CACHE_DIR, SPEC_ENV
from components.modal_target import ModalAppProvider, app_inputs, app_spec
from components.stackfile import read_raw
from tests.modal.fake_modal import RecordingModalClient

SHA = "0e9e39f249a16976918f6564b8830bc894c89659"


def _spec(stack: str, predownload: bool = True, revision: str | None = SHA):
    raw = read_raw(stack)
    config = parse_stack_config(
        {**raw, "model": {**raw["model"], "revision": revision}, "modal": {**raw["modal"], "predownload": predownload}},
        require_secrets=False,
    )
    return app_spec(config, stack)


@pytest.mark.parametrize("stack", ["modal-dev", "modal-prod"])
def test_the_app_declares_a_cpu_download_function_on_the_weights_volume(stack):
    spec = _spec(stack)
    assert spec.model_revision == SHA
    module = load_app(spec)
    info = module.download_weights.info()
    assert info.gpus == []  # downloading needs no GPU
    assert info.timeout == DOWNLOAD_TIMEOUT
    assert list(info.volumes) == [HF_CACHE_DIR]  # where vLLM's HF_HOME is: its own download finds the files
    assert f"modal.Secret.from_name({spec.secret_name!r})" in info.secrets  # the HF token for gated models
    # `env=` becomes an anonymous secret: the spec the container rebuilds itself from, as serve_vllm does.
    assert f"Secret.from_dict([{SPEC_ENV}])" in info.secrets
    assert not info.web_info  # not a web endpoint: only `pulumi up` calls it


@pytest.mark.parametrize("stack", ["modal-dev", "modal-prod"])
def test_without_the_key_there_is_no_download_function(stack):
    module = load_app(_spec(stack, predownload=False))
    with warnings.catch_warnings():  # `registered_functions` is deprecated (Modal 1.7); no other reader
        warnings.simplefilter("ignore")
        declared = set(module.app.registered_functions)
    assert "download_weights" not in declared and "serve_vllm" in declared


def _props(spec) -> dict:
    return {"__provider": "<pickled provider>", **app_inputs(spec, "src", 1)}


def test_pulumi_up_downloads_once_per_model_and_revision(modal_token):
    fake = RecordingModalClient()
    provider = ModalAppProvider(fake)
    spec = _spec("modal-dev")

    created = provider.create(_props(spec))
    assert fake.methods() == ["deploy", "predownload"]  # after the deploy: the function exists then
    assert fake.calls[-1][1] == {"app_name": spec.app_name, "model": spec.model_id, "revision": SHA}
    assert created.outs["predownloaded"] == f"{spec.model_id}@{SHA}"

    # A redeploy for anything else (new source, new secret version) does not download again.
    provider.update(spec.app_name, created.outs, {**_props(spec), "source_hash": "src2"})
    assert fake.methods() == ["deploy", "predownload", "deploy"]

    # A new revision does.
    newer = _spec("modal-dev", revision="a" * 40)
    updated = provider.update(spec.app_name, created.outs, _props(newer))
    assert fake.methods()[-2:] == ["deploy", "predownload"]
    assert updated.outs["predownloaded"] == f"{spec.model_id}@{'a' * 40}"


def test_off_by_default_and_nothing_is_downloaded(modal_token):
    fake = RecordingModalClient()
    spec = _spec("modal-dev", predownload=False)
    assert read_raw("modal-dev")["modal"].get("predownload") is None
    outs = ModalAppProvider(fake).create(_props(spec)).outs
    assert fake.methods() == ["deploy"] and outs["predownloaded"] is None
