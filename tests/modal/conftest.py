from __future__ import annotations

import functools

import pytest

from components.modal_app import AppSpec, load_app
from components.modal_target import app_spec
from components.stackfile import load_stack

MODAL_STACKS = ("modal-dev", "modal-prod")
# Stand-ins for the stack's Pulumi secrets (the values must never show up outside the secret).
SECRET_VALUES = {
    "hfToken": "hf_SECRET_hub_token_123",
    "vllmApiKey": "vllm-SECRET-key-456",
    "wrapperApiKey": "wrap-SECRET-key-789",
    "modalProxyTokenId": "wk-SECRET-proxy-id-012",
    "modalProxyTokenSecret": "ws-SECRET-proxy-secret-345",
}


@functools.lru_cache(maxsize=None)
def spec_for(stack: str) -> AppSpec:
    return app_spec(load_stack(stack), stack)


@pytest.fixture
def no_modal_token(monkeypatch, tmp_path):
    """No MODAL_TOKEN_* in the environment and no ~/.modal.toml."""
    for key in ("MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET", "MODAL_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MODAL_CONFIG_PATH", str(tmp_path / "no-such-modal.toml"))
    monkeypatch.setenv("HOME", str(tmp_path))


@pytest.fixture
def modal_token(monkeypatch):
    """A token the fake seam never checks (no real Modal call is made with it)."""
    monkeypatch.setenv("MODAL_TOKEN_ID", "ak-test")
    monkeypatch.setenv("MODAL_TOKEN_SECRET", "as-test")


# Function-scoped: load_app re-executes the module in place, so a module loaded for another
# spec in an earlier test must not leak into this one.
@pytest.fixture
def dev():
    spec = spec_for("modal-dev")
    return spec, load_app(spec)


@pytest.fixture
def prod():
    spec = spec_for("modal-prod")
    return spec, load_app(spec)
