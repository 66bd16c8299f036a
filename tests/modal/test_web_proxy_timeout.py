"""Requests that wait on a cold start longer than Modal's web request limit (150 s, shortened here).

Client -> a stand-in of Modal's web proxy (tests/modal/web_proxy.py, modelled on Modal's docs)
-> a real wrapper process -> the fault upstream holding its answer as a waking vLLM does.
Non-streamed: the proxy answers 303 to the result URL and the official ``openai`` client follows
it to the answer. Streamed: the wrapper starts the response (SSE headers, keep-alives) before the
limit, so the proxy never redirects it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.support.ports import free_port
from tests.support.processes import ServerProcess
from tests.wrapper._wrapper_servers import FaultUpstream, Wrapper

KEY = "upstream-secret-key"
LIMIT = 1.0  # Modal's 150 s, shortened
HOLD = 2.5  # the cold start: longer than LIMIT
CHAT = {"model": "fake-echo", "messages": [{"role": "user", "content": "abcdefghi"}]}


class ModalWebProxy(ServerProcess):
    def __init__(self, upstream: str, limit: float) -> None:
        port = free_port()
        cmd = [sys.executable, str(Path(__file__).with_name("web_proxy.py")), "--port", str(port)]
        super().__init__([*cmd, "--upstream", upstream, "--limit", str(limit)], port, ready="/__proxy/stats")

    def stats(self) -> dict:
        return httpx.get(self.url + "/__proxy/stats", timeout=5).json()


@pytest.fixture(scope="module")
def upstream() -> Iterator[FaultUpstream]:
    up = FaultUpstream(api_key=KEY)
    try:
        yield up
    finally:
        up.stop()


def _chain(upstream: FaultUpstream, **wrapper_settings: object) -> tuple[Wrapper, ModalWebProxy]:
    wrapper = Wrapper(upstream.base_url, api_key=KEY, timeout=30, **wrapper_settings)
    try:
        return wrapper, ModalWebProxy(wrapper.url, LIMIT)
    except BaseException:
        wrapper.stop()
        raise


@pytest.fixture(scope="module")
def modal(upstream: FaultUpstream) -> Iterator[ModalWebProxy]:
    """The autoscale shape's client hop: Modal's proxy in front of the wrapper."""
    wrapper, proxy = _chain(upstream, stream_keepalive_after=0.3, stream_keepalive_interval=0.3)
    try:
        yield proxy
    finally:
        proxy.stop()
        wrapper.stop()


@pytest.fixture
def cold(upstream: FaultUpstream) -> FaultUpstream:
    upstream.reset(header_delay=HOLD)
    return upstream


def test_a_plain_request_past_the_limit_gets_the_303_and_its_result_url_gives_the_answer(
    cold: FaultUpstream, modal: ModalWebProxy
) -> None:
    before = modal.stats()["redirects"]
    r = httpx.post(modal.url + "/v1/chat/completions", json=CHAT, timeout=30)  # like curl without -L
    assert r.status_code == 303
    assert "__modal_function_call_id=" in r.headers["location"]
    assert modal.stats()["redirects"] == before + 1
    result = httpx.get(modal.url + r.headers["location"], timeout=30)  # blocks until the request completes
    assert result.status_code == 200
    assert result.json()["choices"][0]["message"]["content"] == "abcdefghi"
    assert cold.stats()["requests"] == 1  # the result URL started no second request


def test_the_official_client_follows_the_303_to_its_answer(cold: FaultUpstream, modal: ModalWebProxy) -> None:
    before = modal.stats()["redirects"]
    client = openai.OpenAI(base_url=modal.url + "/v1", api_key="unused", max_retries=0)
    answer = client.chat.completions.create(**CHAT)
    assert answer.choices[0].message.content == "abcdefghi"
    assert modal.stats()["redirects"] == before + 1  # it did go through the redirect


def test_a_streamed_request_past_the_limit_is_kept_alive_and_never_redirected(
    cold: FaultUpstream, modal: ModalWebProxy
) -> None:
    before = modal.stats()["redirects"]
    with httpx.stream("POST", modal.url + "/v1/chat/completions", json={**CHAT, "stream": True}, timeout=30) as r:
        data = r.read()
    assert r.status_code == 200 and not r.history
    assert data.startswith(b": keep-alive\n\n") and data.endswith(b"data: [DONE]\n\n")
    client = openai.OpenAI(base_url=modal.url + "/v1", api_key="unused", max_retries=0)
    cold.reset(header_delay=HOLD)
    text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(**CHAT, stream=True))
    assert text == "abcdefghi"
    assert modal.stats()["redirects"] == before


def test_without_keepalives_the_same_stream_would_be_redirected(upstream: FaultUpstream) -> None:
    """The control: the stand-in does bite a stream that has not started by the limit."""
    wrapper, proxy = _chain(upstream, stream_keepalive_after=0)
    try:
        upstream.reset(header_delay=HOLD)
        r = httpx.post(proxy.url + "/v1/chat/completions", json={**CHAT, "stream": True}, timeout=30)
        assert r.status_code == 303
    finally:
        proxy.stop()
        wrapper.stop()
        upstream.reset()
