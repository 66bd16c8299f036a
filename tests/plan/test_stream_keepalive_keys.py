"""`wrapper.streamKeepaliveAfter` / `.streamKeepaliveInterval` reach the wrapper on every target."""

from __future__ import annotations

import pytest

from components import manifests, wrapper_env
from components.config import ConfigError, parse_stack_config
from components.modal_target import app_spec
from components.plan import serving_plan
from components.stackfile import read_raw

KEYS = {"streamKeepaliveAfter": 3, "streamKeepaliveInterval": 10}
SET = {wrapper_env.STREAM_KEEPALIVE_AFTER: "3", wrapper_env.STREAM_KEEPALIVE_INTERVAL: "10"}


def _config(stack: str, **wrapper: object):
    raw = read_raw(stack)
    return parse_stack_config({**raw, "wrapper": {**raw.get("wrapper", {}), **wrapper}}, require_secrets=False)


def _kubernetes_env(config) -> dict[str, str | None]:
    return {e["name"]: e.get("value") for e in manifests.wrapper_env(config, serving_plan(config))}


def test_set_keys_reach_the_kubernetes_wrapper_and_the_modal_wrapper():
    assert SET.items() <= _kubernetes_env(_config("dev", **KEYS)).items()
    assert SET.items() <= app_spec(_config("modal-dev", **KEYS), "modal-dev").wrapper_env.items()


def test_unset_keys_are_left_out_so_the_wrappers_defaults_hold():
    assert not SET.keys() & _kubernetes_env(_config("dev")).keys()
    assert not SET.keys() & app_spec(_config("modal-dev"), "modal-dev").wrapper_env.keys()


@pytest.mark.parametrize("key", list(KEYS))
def test_zero_is_refused_naming_the_key(key):
    with pytest.raises(ConfigError, match=f"wrapper.{key}: Input should be greater than or equal to 1"):
        _config("dev", **{key: 0})
