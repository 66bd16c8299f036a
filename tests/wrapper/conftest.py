"""Fixtures for the wrapper suite: real servers only (vLLM, a fault upstream, the wrapper)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.vllm_fixture import real_vllm, slow_vllm  # noqa: F401
from tests.wrapper._wrapper_servers import FaultUpstream, Wrapper

# Fast retries so fault tests stay quick; the production default is 0.2 s.
FAST = {"retry_backoff": 0.02, "max_retries": 3, "timeout": 3, "health_timeout": 0.5, "health_cache_seconds": 0}


@pytest.fixture(scope="session")
def fault_upstream() -> Iterator[FaultUpstream]:
    up = FaultUpstream(api_key="upstream-secret-key")
    try:
        yield up
    finally:
        up.stop()


@pytest.fixture
def faults(fault_upstream: FaultUpstream) -> FaultUpstream:
    """The fault upstream, reset to well-behaved before each test."""
    fault_upstream.reset()
    return fault_upstream


@pytest.fixture(scope="session")
def fault_wrapper(fault_upstream: FaultUpstream) -> Iterator[Wrapper]:
    w = Wrapper(fault_upstream.base_url, api_key="upstream-secret-key", **FAST)
    try:
        yield w
    finally:
        w.stop()


@pytest.fixture(scope="session")
def vllm_wrapper(real_vllm) -> Iterator[Wrapper]:  # noqa: F811
    w = Wrapper(real_vllm.base_url, api_key=real_vllm.api_key, timeout=30)
    try:
        yield w
    finally:
        w.stop()


@pytest.fixture(scope="session")
def slow_vllm_wrapper(slow_vllm) -> Iterator[Wrapper]:  # noqa: F811
    w = Wrapper(slow_vllm.base_url, api_key=slow_vllm.api_key, timeout=30)
    try:
        yield w
    finally:
        w.stop()
