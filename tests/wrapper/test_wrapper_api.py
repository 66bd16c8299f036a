"""The wrapper's own behaviour (inputs, auth, ids, metrics, logs, /chat format), in front of the
real fault-upstream process in its well-behaved mode."""

from __future__ import annotations

import json
import socket
import time

import httpx
import openai
import pytest

from tests.wrapper._wrapper_servers import Wrapper
from tests.wrapper.conftest import FAST
from wrapper.sse import decode_chat_stream

MSG = [{"role": "user", "content": "hello"}]
WRAPPER_KEY = "client-facing-key-123"


def logged(w: Wrapper, needle: str, timeout: float = 2.0) -> str:
    """The wrapper's log once it holds ``needle`` (the access line follows the response)."""
    deadline = time.monotonic() + timeout
    while needle not in (log := w.log()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return log


def err_of(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    return err


# -- malformed input: always 4xx, OpenAI-shaped, never 5xx --------------------------------------

BAD_BODIES = [
    b"{not json",
    b"",
    b"[1, 2]",
    b'"a string"',
    b"null",
    b"{}",
    b'{"messages": "hi"}',
    b'{"messages": []}',
    b'{"messages": [{"role": "user", "content": "x"}], "stream": "yes"}',
    b'{"messages": [{"role": "user", "content": "x"}], "model": 42}',
    b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": -5}',
    b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": 99999999999999999999999}',
    b"\xff\xfe\x00garbage",
    b'{"messages": [{"role": "user", "content": "x"}]',
]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions", "/chat"])
@pytest.mark.parametrize("body", BAD_BODIES, ids=range(len(BAD_BODIES)))
def test_malformed_bodies_are_4xx(fault_wrapper, faults, path, body):
    r = httpx.post(fault_wrapper.url + path, content=body, headers={"Content-Type": "application/json"})
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    err_of(r, r.status_code)


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", None])
def test_wrong_content_type_is_a_400_that_names_it(fault_wrapper, ctype):
    headers = {"Content-Type": ctype} if ctype else {}
    for path in ("/chat", "/v1/chat/completions"):
        r = httpx.post(fault_wrapper.url + path, content=b"messages=hi", headers=headers)
        err = err_of(r, 400)
        assert err["param"] == "Content-Type" and "must be application/json" in err["message"]


def test_chat_validation_names_the_field(fault_wrapper):
    r = httpx.post(fault_wrapper.url + "/chat", json={"messages": [{"role": "user", "content": "x"}], "temperature": 9})
    err = err_of(r, 400)
    assert err["param"] == "temperature" and err["type"] == "BadRequestError"
    r = httpx.post(fault_wrapper.url + "/chat", json={"messages": [{"role": "wizard", "content": "x"}]})
    assert err_of(r, 400)["param"] == "messages.0.role"
    with pytest.raises(openai.BadRequestError):
        openai.OpenAI(base_url=fault_wrapper.base_url, api_key="x", max_retries=0).chat.completions.create(
            model="fake-echo", messages=[]
        )


def test_oversized_body_is_413(fault_upstream):
    w = Wrapper(fault_upstream.base_url, api_key="upstream-secret-key", max_body_bytes=4096, **FAST)
    try:
        big = {"messages": [{"role": "user", "content": "x" * 10_000}]}
        for path in ("/chat", "/v1/chat/completions", "/v1/completions"):
            err = err_of(httpx.post(w.url + path, json=big), 413)
            assert err["code"] == "request_too_large"

        def chunks():
            yield b'{"prompt": "'
            for _ in range(20):
                yield b"y" * 1000
            yield b'"}'

        r = httpx.post(w.base_url + "/completions", content=chunks(), headers={"Content-Type": "application/json"})
        err_of(r, 413)
        r = httpx.post(w.url + "/chat", content=chunks(), headers={"Content-Type": "application/json"})
        err_of(r, 413)
        assert httpx.post(w.url + "/chat", json={"messages": MSG}).status_code == 200
    finally:
        w.stop()


def test_unknown_path_and_method_are_openai_errors(fault_wrapper):
    assert err_of(httpx.get(fault_wrapper.url + "/v1/nope"), 404)["type"] == "NotFoundError"
    err_of(httpx.get(fault_wrapper.url + "/chat"), 405)


# -- pass-through details -----------------------------------------------------------------------


def test_default_model_injected_only_when_absent(fault_wrapper, faults):
    httpx.post(fault_wrapper.base_url + "/chat/completions", json={"messages": MSG, "temperature": 0})
    sent = json.loads(faults.last()["body"])
    assert sent == {"model": "fake-echo", "messages": MSG, "temperature": 0}
    as_json = {"Content-Type": "application/json"}
    httpx.post(fault_wrapper.base_url + "/completions", content=b'  {"prompt":"a","model":null}', headers=as_json)
    assert json.loads(faults.last()["body"]) == {"prompt": "a", "model": "fake-echo"}
    raw = b'{"messages":[{"role":"user","content":"hi"}],"model":"fake-echo","top_k":3,"ignore_eos":true}'
    httpx.post(fault_wrapper.base_url + "/chat/completions", content=raw, headers=as_json)
    assert faults.last()["body"].encode() == raw  # forwarded byte for byte


def test_configured_default_model(fault_upstream, faults):
    w = Wrapper(fault_upstream.base_url, api_key="upstream-secret-key", model="fake-echo", **FAST)
    try:
        r = httpx.post(w.url + "/chat", json={"messages": MSG})
        assert r.json()["model"] == "fake-echo"
        assert json.loads(faults.last()["body"])["model"] == "fake-echo"
        assert httpx.get(w.url + "/").json()["model"] == "fake-echo"
    finally:
        w.stop()


def test_request_id_honoured_echoed_and_forwarded(fault_wrapper, faults):
    r = httpx.post(fault_wrapper.url + "/chat", json={"messages": MSG}, headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    assert faults.last()["headers"]["x-request-id"] == "abc-123"
    r = httpx.get(fault_wrapper.url + "/health", headers={"X-Request-ID": "bad id\twith junk"})
    assert r.headers["x-request-id"] != "bad id\twith junk" and len(r.headers["x-request-id"]) >= 16
    assert r.headers["x-request-id"] in logged(fault_wrapper, r.headers["x-request-id"])


def test_backend_key_sent_upstream_never_logged(fault_wrapper, faults):
    httpx.post(fault_wrapper.base_url + "/chat/completions", json={"messages": MSG})
    assert faults.last()["headers"]["authorization"] == "Bearer upstream-secret-key"
    assert "upstream-secret-key" not in fault_wrapper.log()
    assert "upstream-secret-key" not in httpx.get(fault_wrapper.url + "/").text
    assert "upstream-secret-key" not in httpx.get(fault_wrapper.url + "/metrics").text


def test_structured_json_logs(fault_wrapper):
    httpx.post(fault_wrapper.url + "/chat", json={"messages": MSG}, headers={"X-Request-ID": "log-check-1"})
    log = logged(fault_wrapper, "log-check-1")
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    hit = [x for x in lines if x.get("request_id") == "log-check-1"]
    assert hit and hit[-1]["path"] == "/chat" and hit[-1]["status"] == 200 and hit[-1]["duration_ms"] > 0
    assert all({"ts", "level", "logger", "msg"} <= set(x) for x in lines)


# -- /chat and its stream format ----------------------------------------------------------------


def test_chat_simple_shape(fault_wrapper):
    r = httpx.post(fault_wrapper.url + "/chat", json={"messages": MSG, "max_tokens": 1, "temperature": 0})
    assert r.json() == {
        "content": "hel",
        "model": "fake-echo",
        "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3},
        "finish_reason": "length",
    }


@pytest.mark.parametrize(
    "text",
    ["plain words only", "two\nlines", "a\n\n\nb\n", " leading space", "\nstart", "[DONE]", "x[DONE]",
     "say\n[DONE]\nnow [DONE][DONE]",
     "tab\tand \u00e9\u4e2d\U0001f600 emoji", "crlf\r\nline"],
)
def test_chat_stream_encoding_round_trips(fault_wrapper, text):
    r = httpx.post(
        fault_wrapper.url + "/chat", json={"messages": [{"role": "user", "content": text}], "stream": True}
    )
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert r.text.endswith("data: [DONE]\n\n")
    assert decode_chat_stream(r.text) == text.replace("\r\n", "\n")
    assert r.text.count("data: [DONE]\n") == 1  # only the end marker, whatever the text
    if "\n" not in text and "\r" not in text and "[DONE]" not in text:
        # The old clients' way: print(line[6:]) for each data line.
        old = "".join(line[6:] for line in r.text.splitlines() if line.startswith("data: "))
        assert old == text + "[DONE]"


def test_chat_default_max_tokens_beyond_context_falls_back(fault_upstream, faults):
    w = Wrapper(fault_upstream.base_url, api_key="upstream-secret-key", default_max_tokens=100000, **FAST)
    try:
        for stream in (False, True):
            r = httpx.post(w.url + "/chat", json={"messages": MSG, "stream": stream})
            assert r.status_code == 200, r.text
            assert "max_tokens" not in json.loads(faults.last()["body"])
        r = httpx.post(w.url + "/chat", json={"messages": MSG, "max_tokens": 5000})
        assert err_of(r, 400)["param"] == "max_tokens"
    finally:
        w.stop()


# -- auth ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def locked(fault_upstream):
    w = Wrapper(fault_upstream.base_url, api_key="upstream-secret-key", wrapper_api_key=WRAPPER_KEY, **FAST)
    yield w
    w.stop()


def test_auth_rejects_missing_or_wrong_key(locked):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": WRAPPER_KEY},
                    {"Authorization": "Basic " + WRAPPER_KEY}, {"Authorization": f"Bearer {WRAPPER_KEY}x"}):
        for method, path in (("POST", "/chat"), ("POST", "/v1/chat/completions"), ("GET", "/v1/models"),
                             ("GET", "/models"), ("POST", "/v1/completions")):
            r = httpx.request(method, locked.url + path, json={"messages": MSG}, headers=headers)
            err = err_of(r, 401)
            assert err["type"] == "AuthenticationError"
            assert WRAPPER_KEY not in r.text
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=locked.base_url, api_key="wrong", max_retries=0).models.list()
    assert WRAPPER_KEY not in locked.log()


def test_auth_accepts_right_key_and_keeps_probes_open(locked, faults):
    c = openai.OpenAI(base_url=locked.base_url, api_key=WRAPPER_KEY, max_retries=0)
    assert [m.id for m in c.models.list()] == ["fake-echo"]
    assert faults.last() == {} or faults.last()["headers"]["authorization"] == "Bearer upstream-secret-key"
    c.chat.completions.create(model="fake-echo", messages=MSG)
    assert faults.last()["headers"]["authorization"] == "Bearer upstream-secret-key"
    for path in ("/health", "/metrics", "/", "/openapi.json", "/docs"):
        assert httpx.get(locked.url + path).status_code == 200, path
    assert httpx.get(locked.url + "/").json()["auth_required"] is True


# -- service endpoints ----------------------------------------------------------------------------


def test_models_both_paths(fault_wrapper):
    a = httpx.get(fault_wrapper.url + "/models").json()
    b = httpx.get(fault_wrapper.base_url + "/models").json()
    assert a == b and a["data"][0]["id"] == "fake-echo"


def test_service_info(fault_wrapper):
    info = httpx.get(fault_wrapper.url + "/").json()
    assert info["service"] == "vllm-wrapper" and "version" in info and "architecture" in info


def test_prometheus_metrics(fault_wrapper):
    httpx.post(fault_wrapper.url + "/chat", json={"messages": MSG, "max_tokens": 1})
    httpx.post(fault_wrapper.base_url + "/chat/completions", json={"messages": MSG, "stream": True,
                                                                  "stream_options": {"include_usage": True}})
    httpx.get(fault_wrapper.url + "/nope/" + "x" * 50)
    text = httpx.get(fault_wrapper.url + "/metrics").text
    assert 'vllm_wrapper_requests_total{method="POST",route="/chat",status="200"}' in text
    assert 'vllm_wrapper_requests_total{method="GET",route="other",status="404"}' in text
    assert "nope" not in text  # unknown paths do not blow up label cardinality
    assert 'vllm_wrapper_request_duration_seconds_bucket{le="0.005",route="/chat"}' in text
    assert 'vllm_wrapper_tokens_total{kind="completion",route="/chat"}' in text
    assert 'vllm_wrapper_tokens_total{kind="completion",route="/v1/chat/completions"}' in text
    assert "vllm_wrapper_streams_in_flight 0.0" in text


def test_keepalive_connection_survives_upstream_idle_close(fault_wrapper, faults):
    # Several sequential requests on one client connection, with pauses longer than the
    # upstream's idle timeout would be in production; stale pooled sockets are retried.
    with httpx.Client(base_url=fault_wrapper.url) as c:
        for _ in range(3):
            assert c.post("/chat", json={"messages": MSG}).status_code == 200


def test_http_pipelining_garbage_does_not_kill_server(fault_wrapper):
    with socket.create_connection(("127.0.0.1", fault_wrapper.port)) as s:
        s.sendall(b"GARBAGE /\r\n\r\n")
        s.recv(100)
    assert httpx.get(fault_wrapper.url + "/health").status_code == 200
