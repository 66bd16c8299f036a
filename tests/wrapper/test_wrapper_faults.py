"""Faults, with a real misbehaving upstream process on loopback (no in-process mocks)."""

from __future__ import annotations

import socket
import time

import httpx
import openai
import pytest

from tests.wrapper._wrapper_servers import Wrapper, free_port
from tests.wrapper.conftest import FAST

MSG = [{"role": "user", "content": "hello there, how are you?"}]


def client(w: Wrapper, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=w.base_url, api_key="not-needed", max_retries=0, **kw)


def assert_openai_error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and err["message"]
    return err


# -- backend down / loading --------------------------------------------------------------------


@pytest.fixture(scope="module")
def dead_wrapper():
    w = Wrapper(f"http://127.0.0.1:{free_port()}/v1", **FAST)
    yield w
    w.stop()


def test_backend_down_is_503_with_retry_after(dead_wrapper):
    t = time.monotonic()
    r = httpx.post(dead_wrapper.base_url + "/chat/completions", json={"messages": MSG}, timeout=10)
    assert_openai_error(r, 503)
    assert int(r.headers["retry-after"]) > 0
    assert time.monotonic() - t < 3
    with pytest.raises(openai.InternalServerError) as exc:
        client(dead_wrapper).chat.completions.create(model="m", messages=MSG)
    assert exc.value.status_code == 503


def test_backend_down_stream_and_chat_are_503(dead_wrapper):
    r = httpx.post(dead_wrapper.base_url + "/chat/completions", json={"messages": MSG, "stream": True})
    assert_openai_error(r, 503)
    r = httpx.post(dead_wrapper.url + "/chat", json={"messages": MSG, "stream": True})
    assert_openai_error(r, 503)
    r = httpx.get(dead_wrapper.url + "/models")
    assert_openai_error(r, 503)


def test_health_is_fast_when_backend_down(dead_wrapper):
    t = time.monotonic()
    r = httpx.get(dead_wrapper.url + "/health", timeout=5)
    assert time.monotonic() - t < 1.5
    assert r.status_code == 200
    body = r.json()
    assert body["vllm_available"] is False and body["status"] != "healthy"
    assert body["base_url"] == dead_wrapper_base(dead_wrapper)


def dead_wrapper_base(w: Wrapper) -> str:
    return w.log and httpx.get(w.url + "/health").json()["base_url"]


def test_health_never_hangs_on_a_silent_backend(fault_wrapper, faults):
    faults.control(health_delay=10)
    # Each answer comes from the last known state at once; the background probe gives up after
    # VLLM_HEALTH_TIMEOUT (0.5 s here) and the answers after it say so.
    deadline = time.monotonic() + 10
    while (r := httpx.get(fault_wrapper.url + "/health", timeout=1)).json()["vllm_available"]:
        assert time.monotonic() < deadline, "the silent backend never showed as unavailable"
        time.sleep(0.05)
    assert r.json()["status"] == "degraded"
    faults.control(health_delay=0)
    healthy = {
        "status": "healthy",
        "vllm_available": True,
        "model": "fake-echo",  # discovered from /v1/models in the background
        "base_url": faults.base_url,
        "wrapper_status": "healthy",
        "vllm_status": "available",
    }
    deadline = time.monotonic() + 10
    while (body := httpx.get(fault_wrapper.url + "/health").json()) != healthy:
        assert time.monotonic() < deadline, f"the backend never showed as healthy again: {body}"
        time.sleep(0.05)


def test_loading_backend_gives_503_then_recovers(fault_wrapper, faults):
    faults.control(fail_status=503, fail_count=100, retry_after=7)
    r = httpx.post(fault_wrapper.base_url + "/chat/completions", json={"messages": MSG})
    assert_openai_error(r, 503)
    assert r.headers["retry-after"] == "7"
    # Its Retry-After is longer than VLLM_TIMEOUT leaves: answer at once, passing it on.
    assert faults.stats()["requests"] == 1
    faults.reset(fail_status=503, fail_count=100)
    r = httpx.post(fault_wrapper.base_url + "/chat/completions", json={"messages": MSG})
    assert_openai_error(r, 503)
    assert int(r.headers["retry-after"]) > 0
    assert faults.stats()["requests"] == 1 + FAST["max_retries"]
    faults.control(fail_count=0)
    r = httpx.post(fault_wrapper.base_url + "/chat/completions", json={"messages": MSG})
    assert r.status_code == 200


# -- retries ------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [502, 503, 504])
def test_retry_then_ok(fault_wrapper, faults, status):
    faults.control(fail_status=status, fail_count=2)
    out = client(fault_wrapper).chat.completions.create(model="fake-echo", messages=MSG, max_tokens=3)
    assert out.choices[0].message.content == "hello the"[: 9]
    assert faults.stats()["requests"] == 3


def test_retry_then_ok_streamed(fault_wrapper, faults):
    faults.control(fail_status=503, fail_count=2)
    chunks = list(client(fault_wrapper).chat.completions.create(model="fake-echo", messages=MSG, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == MSG[0]["content"][:48]
    assert faults.stats()["requests"] == 3


def test_retry_after_dropped_connection(fault_wrapper, faults):
    faults.control(drop_count=2)
    r = httpx.post(fault_wrapper.url + "/chat", json={"messages": MSG, "max_tokens": 2})
    assert r.status_code == 200, r.text
    assert r.json()["content"] == "hello "
    assert faults.stats()["requests"] == 3


def test_no_retry_on_4xx(fault_wrapper, faults):
    faults.control(fail_status=429, fail_count=5)
    r = httpx.post(fault_wrapper.base_url + "/completions", json={"prompt": "x"})
    assert_openai_error(r, 429)
    assert faults.stats()["requests"] == 1


def test_retries_exhausted_502_passes_status(fault_wrapper, faults):
    faults.control(fail_status=502, fail_count=100)
    r = httpx.post(fault_wrapper.base_url + "/completions", json={"prompt": "x"})
    assert_openai_error(r, 502)
    assert faults.stats()["requests"] == 1 + FAST["max_retries"]


# -- timeouts -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def quick_timeout(fault_upstream):
    w = Wrapper(fault_upstream.base_url, api_key="upstream-secret-key", **{**FAST, "timeout": 1})
    yield w
    w.stop()


def test_slow_backend_is_504(quick_timeout, faults):
    faults.control(header_delay=3)
    t = time.monotonic()
    r = httpx.post(quick_timeout.base_url + "/chat/completions", json={"messages": MSG}, timeout=15)
    assert_openai_error(r, 504)
    assert time.monotonic() - t > 0.8  # it waited out VLLM_TIMEOUT; the 504 shows it gave up before the backend's 3 s
    r = httpx.post(quick_timeout.url + "/chat", json={"messages": MSG, "stream": True}, timeout=15)
    assert_openai_error(r, 504)
    with pytest.raises(openai.APIStatusError) as exc:
        client(quick_timeout).completions.create(model="fake-echo", prompt="x")
    assert exc.value.status_code == 504


def test_a_body_still_arriving_at_the_timeout_is_504_and_the_upstream_call_is_dropped(quick_timeout, faults):
    # VLLM_TIMEOUT bounds the whole non-streamed call, body included, not only its head.
    faults.control(body_delay=3)
    for path in ("/v1/chat/completions", "/v1/completions"):
        r = httpx.post(quick_timeout.url + path, json={"messages": MSG, "prompt": "x"}, timeout=15)
        assert_openai_error(r, 504)
        assert "did not answer within 1 s" in r.json()["error"]["message"]
    give_up = time.monotonic() + 2
    while faults.stats()["cancelled_requests"] < 2 and time.monotonic() < give_up:
        time.sleep(0.02)
    assert faults.stats()["cancelled_requests"] == 2  # the wrapper closed both upstream connections
    faults.control(body_delay=0)
    r = httpx.post(quick_timeout.base_url + "/chat/completions", json={"messages": MSG}, timeout=15)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == MSG[-1]["content"][:48]


def test_a_connect_still_pending_at_the_timeout_is_504():
    # A listening socket whose accept queue is full (backlog 0, one connection waiting) drops
    # every further SYN: the wrapper's connect hangs, as to a node that went dark.
    with socket.socket() as dark, socket.socket() as filler:
        dark.bind(("127.0.0.1", 0))
        dark.listen(0)
        filler.connect(dark.getsockname())
        w = Wrapper(f"http://127.0.0.1:{dark.getsockname()[1]}/v1", **{**FAST, "timeout": 1})
        try:
            t = time.monotonic()
            r = httpx.post(w.base_url + "/completions", json={"model": "m", "prompt": "x"}, timeout=15)
            waited = time.monotonic() - t
        finally:
            w.stop()
    assert_openai_error(r, 504)
    assert "did not answer within 1 s" in r.json()["error"]["message"]
    assert waited > 0.8  # it gave up at VLLM_TIMEOUT, not at once


def test_silent_mid_stream_ends_with_error_event(quick_timeout, faults):
    faults.control(token_delay=3)
    with httpx.stream(
        "POST", quick_timeout.base_url + "/chat/completions", json={"messages": MSG, "stream": True}, timeout=15
    ) as r:
        assert r.status_code == 200
        body = r.read().decode()
    assert body.startswith("data: {")  # the role chunk went out before the silence
    assert '"GatewayTimeoutError"' in body.splitlines()[-2]
    assert "[DONE]" not in body


# -- dies mid-stream, disconnects ---------------------------------------------------------------


def test_backend_dies_mid_stream_openai_client_raises(fault_wrapper, faults):
    faults.control(die_after=3)
    stream = client(fault_wrapper).chat.completions.create(model="fake-echo", messages=MSG, stream=True)
    got = []
    with pytest.raises(openai.APIError) as exc:
        for chunk in stream:
            got.append(chunk)
    assert "closed the stream" in str(exc.value)
    assert len(got) == 4  # role chunk + 3 pieces
    assert faults.stats()["requests"] == 1  # never retried once the stream started


def test_backend_dies_mid_stream_chat_error_event(fault_wrapper, faults):
    faults.control(die_after=2)
    r = httpx.post(fault_wrapper.url + "/chat", json={"messages": MSG, "stream": True})
    assert r.status_code == 200
    assert r.text.startswith("data: hel\n\ndata: lo \n\nevent: error\ndata: {")
    assert "[DONE]" not in r.text
    assert faults.stats()["requests"] == 1


def _metric(w: Wrapper, name: str) -> float:
    for line in httpx.get(w.url + "/metrics").text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not exposed")


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/chat"])
def test_client_disconnect_cancels_upstream(fault_wrapper, faults, path):
    faults.control(token_delay=0.05)
    long = [{"role": "user", "content": "x" * 3000}]
    with httpx.stream(
        "POST", fault_wrapper.url + path, json={"messages": long, "stream": True, "max_tokens": 1000}, timeout=10
    ) as r:
        it = r.iter_bytes()
        next(it)
        next(it)
        assert faults.stats()["active_streams"] == 1
    deadline = time.monotonic() + 3
    while faults.stats()["cancelled_streams"] == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    s = faults.stats()
    assert s == {**s, "cancelled_streams": 1, "completed_streams": 0, "active_streams": 0}
    deadline = time.monotonic() + 2
    while _metric(fault_wrapper, "vllm_wrapper_streams_in_flight") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _metric(fault_wrapper, "vllm_wrapper_streams_in_flight") == 0


def test_client_leaving_a_non_streamed_call_cancels_upstream(fault_wrapper, faults):
    faults.control(header_delay=2.5)
    for path in ("/v1/chat/completions", "/v1/completions"):
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(fault_wrapper.url + path, json={"messages": MSG, "prompt": "x"}, timeout=0.5)
    deadline = time.monotonic() + 2
    while faults.stats()["cancelled_requests"] < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert faults.stats()["cancelled_requests"] == 2
    text = httpx.get(fault_wrapper.url + "/metrics").text
    assert 'vllm_wrapper_requests_total{method="POST",route="/v1/completions",status="499"} 1.0' in text


def test_raw_socket_disconnect_before_response(fault_wrapper, faults):
    faults.control(header_delay=0.5)
    body = b'{"messages":[{"role":"user","content":"hi"}],"stream":true}'
    with socket.create_connection(("127.0.0.1", fault_wrapper.port)) as s:
        s.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
    time.sleep(1.0)
    assert httpx.get(fault_wrapper.url + "/health").status_code == 200


# -- upstream auth, 4xx pass-through ------------------------------------------------------------


def test_backend_rejecting_our_key_is_502_without_leaking_it(fault_wrapper, faults):
    faults.control(auth_header_fail=True)
    r = httpx.post(fault_wrapper.base_url + "/chat/completions", json={"messages": MSG})
    err = assert_openai_error(r, 502)
    assert "VLLM_API_KEY" in err["message"]
    assert "upstream-secret-key" not in r.text
    assert faults.stats()["requests"] == 1


def test_backend_4xx_passed_through_unchanged(fault_wrapper, faults):
    body = {"model": "no-such-model", "messages": MSG}
    direct = httpx.post(
        faults.base_url + "/chat/completions", json=body, headers={"Authorization": "Bearer upstream-secret-key"}
    )
    via = httpx.post(fault_wrapper.base_url + "/chat/completions", json=body)
    assert via.status_code == direct.status_code == 404
    assert via.content == direct.content
    with pytest.raises(openai.NotFoundError):
        client(fault_wrapper).chat.completions.create(model="no-such-model", messages=MSG)
    with pytest.raises(openai.BadRequestError) as exc:
        client(fault_wrapper).chat.completions.create(model="fake-echo", messages=MSG, max_tokens=5000)
    assert exc.value.param == "max_tokens"
