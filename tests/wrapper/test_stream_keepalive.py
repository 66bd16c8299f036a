"""Streamed requests whose model server has not answered yet: early SSE headers and keep-alives.

A real wrapper process in front of the fault upstream (a real HTTP server) that holds its answer
for ``header_delay`` seconds, as a waking vLLM does; the wrapper's delay before early headers
(``VLLM_STREAM_KEEPALIVE_AFTER``) and the keep-alive interval are shortened.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.wrapper._wrapper_servers import FaultUpstream, Wrapper

KEY = "upstream-secret-key"
KEEPALIVE = b": keep-alive\n\n"
CHAT = {"model": "fake-echo", "stream": True, "messages": [{"role": "user", "content": "abcdefghi"}]}
HOLD = 1.5  # the upstream's delay before it answers: several keep-alive intervals


@pytest.fixture(scope="module")
def upstream() -> Iterator[FaultUpstream]:
    up = FaultUpstream(api_key=KEY)
    try:
        yield up
    finally:
        up.stop()


@pytest.fixture
def up(upstream: FaultUpstream) -> FaultUpstream:
    upstream.reset()
    return upstream


@pytest.fixture(scope="module")
def wrapper(upstream: FaultUpstream) -> Iterator[Wrapper]:
    w = Wrapper(upstream.base_url, api_key=KEY, timeout=30, stream_keepalive_after=0.2, stream_keepalive_interval=0.2)
    try:
        yield w
    finally:
        w.stop()


@pytest.fixture(scope="module")
def wrapper_without_keepalive(upstream: FaultUpstream) -> Iterator[Wrapper]:
    """The wrapper as it was before keep-alives: no early headers at all."""
    w = Wrapper(upstream.base_url, api_key=KEY, timeout=30, stream_keepalive_after=0)
    try:
        yield w
    finally:
        w.stop()


def _raw_stream(url: str, body: dict, on_headers=None) -> tuple[httpx.Response, bytes]:
    with httpx.stream("POST", url, json=body, timeout=30) as r:
        if on_headers is not None:
            on_headers(r)
        return r, r.read()


def _same_apart_from_clock(data: bytes) -> bytes:
    return re.sub(rb'"created":\d+', b'"created":0', data)


def test_a_stream_that_answers_at_once_is_sent_exactly_as_without_keepalives(
    up: FaultUpstream, wrapper: Wrapper, wrapper_without_keepalive: Wrapper
) -> None:
    for route, body in (
        ("/v1/chat/completions", CHAT),
        ("/v1/completions", {"model": "fake-echo", "stream": True, "prompt": "abcdef"}),
        ("/chat", {"stream": True, "messages": CHAT["messages"]}),
    ):
        fast, fast_body = _raw_stream(wrapper.url + route, body)
        plain, plain_body = _raw_stream(wrapper_without_keepalive.url + route, body)
        assert fast.status_code == plain.status_code == 200
        assert KEEPALIVE not in fast_body
        assert _same_apart_from_clock(fast_body) == _same_apart_from_clock(plain_body)
        drop = {"x-request-id", "date"}
        assert [(k, v) for k, v in fast.headers.items() if k not in drop] == [
            (k, v) for k, v in plain.headers.items() if k not in drop
        ]


def test_a_slow_upstream_gets_the_sse_headers_before_it_answers_then_keepalives_then_its_stream(
    up: FaultUpstream, wrapper: Wrapper
) -> None:
    up.control(header_delay=HOLD)
    seen_at_headers: list[dict] = []

    def on_headers(r: httpx.Response) -> None:
        seen_at_headers.append(up.stats())

    r, data = _raw_stream(wrapper.base_url + "/chat/completions", CHAT, on_headers)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    # The headers came while the upstream was still holding the request: no stream had started.
    assert seen_at_headers[0]["active_streams"] == 0 and seen_at_headers[0]["completed_streams"] == 0
    assert data.startswith(KEEPALIVE)
    leading = data[: data.index(b"data: ")]
    assert leading == KEEPALIVE * leading.count(KEEPALIVE) and leading.count(KEEPALIVE) >= 2
    # After the comments, vLLM's stream as it sent it.
    assert data[len(leading) :].endswith(b"data: [DONE]\n\n")
    assert up.stats()["completed_streams"] == 1


def test_the_official_client_reads_a_kept_alive_stream_as_an_ordinary_one(up: FaultUpstream, wrapper: Wrapper) -> None:
    up.control(header_delay=HOLD)
    client = openai.OpenAI(base_url=wrapper.base_url, api_key="unused", max_retries=0)
    stream = client.chat.completions.create(**CHAT)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "abcdefghi"


def test_an_upstream_refusal_after_the_headers_is_an_openai_error_event(up: FaultUpstream, wrapper: Wrapper) -> None:
    up.control(header_delay=HOLD, fail_status=400, fail_count=1)
    r, data = _raw_stream(wrapper.base_url + "/chat/completions", CHAT)
    assert r.status_code == 200  # the status line went out before vLLM said no
    events = data.replace(KEEPALIVE, b"")
    assert events == b'data: {"error":{"message":"fault 400","type":"Fault","param":null,"code":400}}\n\n'

    up.control(header_delay=HOLD, fail_status=400, fail_count=1)
    client = openai.OpenAI(base_url=wrapper.base_url, api_key="unused", max_retries=0)
    with pytest.raises(openai.APIError, match="fault 400"):
        for _ in client.chat.completions.create(**CHAT):
            pass


def test_chat_streams_name_the_error_event_as_chat_errors_always_are(up: FaultUpstream, wrapper: Wrapper) -> None:
    up.control(header_delay=HOLD, fail_status=404, fail_count=1)
    r, data = _raw_stream(wrapper.url + "/chat", {"stream": True, "messages": CHAT["messages"]})
    assert r.status_code == 200
    assert data.replace(KEEPALIVE, b"").startswith(b'event: error\ndata: {"error":')
    assert b'"code":404' in data


def test_the_wrappers_own_timeout_after_the_headers_is_an_error_event_too(upstream: FaultUpstream) -> None:
    upstream.reset(header_delay=5)
    w = Wrapper(upstream.base_url, api_key=KEY, timeout=1, stream_keepalive_after=0.2, stream_keepalive_interval=0.2)
    try:
        r, data = _raw_stream(w.base_url + "/chat/completions", CHAT)
    finally:
        w.stop()
        upstream.reset()
    assert r.status_code == 200
    assert data.startswith(KEEPALIVE)
    assert data.replace(KEEPALIVE, b"").startswith(b'data: {"error":{"message":"the model server did not answer')
    assert b'"code":504' in data


def test_a_client_that_leaves_during_the_keepalives_cancels_the_upstream_request(
    up: FaultUpstream, wrapper: Wrapper
) -> None:
    up.control(header_delay=30)
    with httpx.stream("POST", wrapper.base_url + "/chat/completions", json=CHAT, timeout=30) as r:
        chunks = r.iter_raw()
        assert next(chunks).startswith(b":")  # a keep-alive: the wrapper is waiting on vLLM
    # The connection is closed; the upstream sees its request cancelled (give-up bound only).
    give_up = time.monotonic() + 20
    while up.stats()["cancelled_requests"] == 0 and time.monotonic() < give_up:
        time.sleep(0.05)
    assert up.stats()["cancelled_requests"] == 1
