"""Session-scoped pytest fixtures serving a real vLLM on a tiny local model.

Use them from a suite's own conftest.py:

    from tests.support.vllm_fixture import real_vllm, slow_vllm  # noqa: F401

    def test_chat(real_vllm):
        client = openai.OpenAI(base_url=real_vllm.base_url, api_key=real_vllm.api_key)
        client.chat.completions.create(model=real_vllm.model, messages=[...])

``real_vllm``: the ``fast`` model (hidden 128, 2 layers; thousands of tokens/s).
``slow_vllm``: the ``slow`` model (hidden 1024, 8 layers; ~27 ms a token) for
cancellation and timeout tests.

Each is started once per test session, on first use (75 s on 2 idle cores,
~170 s on a busy one; times out after $VLLM_TEST_STARTUP_TIMEOUT, default 420 s), and
stopped at the end of the session. Both yield a :class:`VllmServer`.

The servers are shared by the whole session: a test that may crash the engine
(vLLM exits after an engine crash) should use its own ``VllmServer``, or call
``real_vllm.ensure_running()`` first (restarts in place: same port, same key).

A missing vLLM venv FAILS the test (never skips: a skipped test in CI is a
missing test): run ``bash .ci/install-vllm`` first.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.real_vllm import INSTALL_HINT, VllmNotInstalled, VllmServer, vllm_python

__all__ = ["real_vllm", "require_vllm_venv", "slow_vllm"]


def require_vllm_venv() -> None:
    """pytest.fail (never skip) unless the vLLM venv is installed."""
    try:
        vllm_python()
        return
    except VllmNotInstalled as exc:
        message = str(exc) if INSTALL_HINT in str(exc) else f"{exc}: {INSTALL_HINT}"
    pytest.fail(message, pytrace=False)  # outside `except`: no chained traceback


def _serve(variant: str) -> Iterator[VllmServer]:
    require_vllm_venv()
    server = VllmServer(variant)
    server.start()  # raises VllmStartError with the log tail; pytest caches it per session
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def real_vllm() -> Iterator[VllmServer]:
    """A real vLLM server on the fast tiny model (served name ``tiny``)."""
    yield from _serve("fast")


@pytest.fixture(scope="session")
def slow_vllm() -> Iterator[VllmServer]:
    """A real vLLM server on the slow tiny model (~27 ms a token; served name ``tiny``)."""
    yield from _serve("slow")
