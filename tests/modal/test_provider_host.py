"""Once through Pulumi's real dynamic provider host (`python -u -m pulumi.dynamic`), over gRPC.

The engine's side is played by a gRPC stub: the providers are pickled with dill exactly as
`pulumi up` pickles them, the host unpickles and runs them; the seam is the recording fake
(it writes its calls to a file, the host being another process).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from pulumi.dynamic.dynamic import serialize_provider
from pulumi.runtime import rpc
from pulumi.runtime.proto import provider_pb2, provider_pb2_grpc

from components.modal_app import REPO_ROOT, source_hash
from components.modal_target import ModalAppProvider, ModalSecretProvider, app_inputs, secret_env
from tests.modal.conftest import SECRET_VALUES, spec_for
from tests.modal.fake_modal import RecordingModalClient

SECRET_URN = "urn:pulumi:modal-dev::vllm-deploy::vllm-deploy:modal:Deployment$pulumi-python:dynamic/modal:Secret::s"
APP_URN = "urn:pulumi:modal-dev::vllm-deploy::vllm-deploy:modal:Deployment$pulumi-python:dynamic/modal:App::a"


class Host:
    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-u", "-m", "pulumi.dynamic"],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        port = self.process.stdout.readline().strip()
        assert port.isdigit(), self.process.stderr.read()
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.stub = provider_pb2_grpc.ResourceProviderStub(self.channel)

    def close(self) -> None:
        self.channel.close()
        self.process.terminate()
        self.process.wait(timeout=10)


def _struct(props: dict):
    secrets = {k: v.value for k, v in props.items() if isinstance(v, _Secret)}
    struct = asyncio.run(rpc.serialize_properties({k: v for k, v in props.items() if k not in secrets}, {}))
    for key, value in secrets.items():
        # What the engine sends for a secret input.
        struct.get_or_create_struct(key).update({rpc._special_sig_key: rpc._special_secret_sig, "value": value})
    return struct


def _plain(struct) -> dict:
    return rpc.deserialize_properties(struct)


class _Secret:
    def __init__(self, value) -> None:
        self.value = value


_secret = _Secret


def _host_env(tmp_path: Path, token: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
    env.update(PYTHONPATH=str(REPO_ROOT), HOME=str(tmp_path), MODAL_CONFIG_PATH=str(tmp_path / "none.toml"))
    if token:
        env.update(MODAL_TOKEN_ID="ak-test", MODAL_TOKEN_SECRET="as-test")
    return env


def _calls(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def record(tmp_path) -> Path:
    return tmp_path / "calls.jsonl"


def test_create_diff_update_delete_through_the_provider_host(tmp_path, record):
    host = Host(_host_env(tmp_path, token=True))
    try:
        fake = RecordingModalClient(record_path=str(record))
        secret_provider = serialize_provider(ModalSecretProvider(fake))
        app_provider = serialize_provider(ModalAppProvider(fake))
        for value in SECRET_VALUES.values():  # what state stores as __provider holds no secret
            assert value not in secret_provider and value not in app_provider

        values = secret_env(SECRET_VALUES)
        created = host.stub.Create(provider_pb2.CreateRequest(
            urn=SECRET_URN, properties=_struct({"__provider": secret_provider, "name": "vllm-secrets", "values": _secret(values)})
        ))  # fmt: skip
        assert created.id == "vllm-secrets"
        secret_outs = _plain(created.properties)
        assert secret_outs["version"] == 1
        assert rpc.is_rpc_secret(secret_outs["values"])  # the engine gets them back as a secret
        assert _calls(record) == [{"method": "upsert_secret", "name": "vllm-secrets", "values": values}]

        spec = spec_for("modal-dev")
        props = {"__provider": app_provider, **app_inputs(spec, source_hash(), secret_outs["version"])}
        created = host.stub.Create(provider_pb2.CreateRequest(urn=APP_URN, properties=_struct(props)))
        assert created.id == "vllm-autoscale"
        outs = _plain(created.properties)
        assert outs["url"] == "https://acme--vllm-autoscale-serve-wrapper.modal.run"
        assert outs["openai_base_url"] == outs["url"] + "/v1"
        assert _calls(record)[-1] == {"method": "deploy", "spec": spec.to_dict()}

        same = host.stub.Diff(provider_pb2.DiffRequest(id=created.id, urn=APP_URN, olds=created.properties, news=_struct(props)))
        assert same.changes == provider_pb2.DiffResponse.DIFF_NONE
        news = _struct({**props, "source_hash": "0" * 64})
        changed = host.stub.Diff(provider_pb2.DiffRequest(id=created.id, urn=APP_URN, olds=created.properties, news=news))
        assert changed.changes == provider_pb2.DiffResponse.DIFF_SOME and list(changed.replaces) == []
        renamed = host.stub.Diff(provider_pb2.DiffRequest(
            id=created.id, urn=APP_URN, olds=created.properties, news=_struct({**props, "app_name": "vllm-other"})
        ))  # fmt: skip
        assert list(renamed.replaces) == ["app_name"]

        updated = host.stub.Update(provider_pb2.UpdateRequest(id=created.id, urn=APP_URN, olds=created.properties, news=news))
        assert _plain(updated.properties)["source_hash"] == "0" * 64
        host.stub.Delete(provider_pb2.DeleteRequest(id=created.id, urn=APP_URN, properties=updated.properties))
        assert [c["method"] for c in _calls(record)] == ["upsert_secret", "deploy", "deploy", "stop"]
        assert _calls(record)[-1] == {"method": "stop", "app_name": "vllm-autoscale"}

        # The values went over the gRPC channel: never on the host's command line or environment.
        proc = Path(f"/proc/{host.process.pid}")
        exposed = (proc / "cmdline").read_bytes() + (proc / "environ").read_bytes()
        for value in SECRET_VALUES.values():
            assert value.encode() not in exposed
        host.process.terminate()
        _, stderr = host.process.communicate(timeout=10)
        for value in SECRET_VALUES.values():
            assert value not in stderr
    finally:
        host.close()


def test_missing_token_through_the_provider_host_is_one_clear_error(tmp_path, record):
    host = Host(_host_env(tmp_path, token=False))
    try:
        provider = serialize_provider(ModalSecretProvider(RecordingModalClient(record_path=str(record))))
        request = provider_pb2.CreateRequest(
            urn=SECRET_URN, properties=_struct({"__provider": provider, "name": "vllm-secrets", "values": _secret({"A": "b"})})
        )
        with pytest.raises(grpc.RpcError) as error:
            host.stub.Create(request)
        assert error.value.code() == grpc.StatusCode.UNKNOWN
        assert "ModalCredentialsMissing: no Modal token" in error.value.details()
        assert "modal token new" in error.value.details()
        assert _calls(record) == []
    finally:
        host.close()
