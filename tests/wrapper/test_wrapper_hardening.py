"""Issue 13: the gateway under hostile or unlucky clients, against the real wrapper process and the
real fault upstream (tests/wrapper/upstream_faults.py)."""

from __future__ import annotations

import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.wrapper._wrapper_servers import REPO, Wrapper, start_in_process
from tests.wrapper.conftest import FAST

MSG = [{"role": "user", "content": "hello"}]
KEY = "gateway-test-key-42"
UPSTREAM_KEY = "upstream-secret-key"
PARTIAL_HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


def sample(w: Wrapper, name: str, **labels: str) -> float:
    return w.metric(name, **labels)


def wait_for(predicate, timeout: float = 30.0, what: str = "condition"):
    """Poll until ``predicate()`` is truthy (the timeout only stops a hung test)."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return value


def err_of(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    return err


def open_slow(port: int, count: int, head: bytes = PARTIAL_HEAD) -> list[socket.socket]:
    """``count`` connections that each send the start of a request head and then nothing."""
    socks = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.sendall(head)
        socks.append(s)
    return socks


def closed_by_peer(s: socket.socket) -> bool:
    s.setblocking(False)  # a socket with a timeout would first wait that long for data
    try:
        return s.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:  # nothing to read: still open
        return False
    except ConnectionResetError:
        return True


def read_until_closed(s: socket.socket) -> bytes:
    s.settimeout(60)
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    return out


@pytest.fixture
def more_fds() -> Iterator[int]:
    """This test process's soft RLIMIT_NOFILE raised to its hard limit (then restored)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if target < 3300:
        pytest.fail(f"RLIMIT_NOFILE hard limit is {hard}: 3,000 client sockets need ~3,300; raise it (ulimit -Hn)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    try:
        yield target
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# -- 1. connections that never finish a request -----------------------------------------------------


def test_a_normal_request_succeeds_while_3000_slow_connections_are_open(more_fds, fault_upstream, faults):
    w = Wrapper(fault_upstream.base_url, api_key=UPSTREAM_KEY, header_timeout=120, **FAST)
    socks: list[socket.socket] = []
    try:
        socks = open_slow(w.port, 3000)
        wait_for(lambda: sample(w, "vllm_wrapper_connections_open") >= 3000, what="3000 open connections")
        r = httpx.post(w.base_url + "/chat/completions", json={"messages": MSG}, timeout=30)
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "hello"
        # Under the default cap (4096) every slow connection is still open: nothing was evicted.
        assert not any(closed_by_peer(s) for s in socks)
        assert sample(w, "vllm_wrapper_connections_closed_total", reason="evicted") == 0
    finally:
        for s in socks:
            s.close()
        w.stop()


def test_slow_connections_cannot_exhaust_a_small_fd_limit(more_fds, fault_upstream, faults):
    # The reproduction: `ulimit -n 512` and 600 idle connections made every new request
    # fail. With the limit 512 the wrapper caps itself at (512 - 64) / 2 = 224 connections, and a
    # new connection displaces the oldest one still waiting for a request head.
    w = Wrapper(fault_upstream.base_url, nofile=512, api_key=UPSTREAM_KEY, header_timeout=120, **FAST)
    socks: list[socket.socket] = []
    try:
        socks = open_slow(w.port, 600, head=b"")
        socks += open_slow(w.port, 600)
        for _ in range(3):
            r = httpx.post(w.url + "/chat", json={"messages": MSG}, timeout=30)
            assert r.status_code == 200 and r.json()["content"] == "hello"
        assert sample(w, "vllm_wrapper_connections_open") <= 224
        assert sample(w, "vllm_wrapper_connections_closed_total", reason="evicted") >= 1200 - 224
        assert "connection cap lowered to fit the file-descriptor limit" in w.log()
        wait_for(lambda: "client connections closed or refused" in w.log(), what="the refusal log line")
    finally:
        for s in socks:
            s.close()
        w.stop()


@pytest.fixture(scope="module")
def quick(fault_upstream) -> Iterator[Wrapper]:
    w = Wrapper(fault_upstream.base_url, api_key=UPSTREAM_KEY, header_timeout=1, body_timeout=1,
                keepalive_timeout=1, **FAST)
    yield w
    w.stop()


def test_a_slow_request_head_gets_408_and_is_closed(quick):
    (partial,) = open_slow(quick.port, 1)
    (silent,) = open_slow(quick.port, 1, head=b"")
    answer = read_until_closed(partial)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b'"RequestTimeoutError"' in answer and b"request head not received within 1 s" in answer
    assert read_until_closed(silent) == b""  # nothing was asked: closed without an answer
    assert sample(quick, "vllm_wrapper_connections_closed_total", reason="header_timeout") >= 1
    assert sample(quick, "vllm_wrapper_connections_closed_total", reason="idle_timeout") >= 1


def test_an_idle_keep_alive_connection_is_closed(quick, faults):
    with socket.create_connection(("127.0.0.1", quick.port)) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = read_until_closed(s)  # VLLM_KEEPALIVE_TIMEOUT=1: closed after the answer
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"}")


def test_a_slow_body_gets_408_and_is_logged_as_408(quick, faults):
    with socket.create_connection(("127.0.0.1", quick.port)) as s:
        s.sendall(PARTIAL_HEAD + b"X-Request-ID: slow-body-1\r\nContent-Length: 100\r\n\r\n{\"messages\":")
        answer = read_until_closed(s)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b"request body not received within 1 s" in answer
    assert wait_for(lambda: '"request_id":"slow-body-1"' in quick.log() and quick.log())
    line = next(x for x in quick.log().splitlines() if '"request_id":"slow-body-1"' in x)
    assert '"status":408' in line
    assert faults.stats()["requests"] == 0


def test_a_client_giving_up_on_its_body_is_logged_as_499(quick, faults):
    before = sample(quick, "vllm_wrapper_requests_total", route="/chat", method="POST", status="499")
    with socket.create_connection(("127.0.0.1", quick.port)) as s:
        s.sendall(b"POST /chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"X-Request-ID: gave-up-1\r\nContent-Length: 100\r\n\r\n{\"messages\":")
    line = wait_for(lambda: next((x for x in quick.log().splitlines() if '"request_id":"gave-up-1"' in x), None))
    assert '"status":499' in line
    assert sample(quick, "vllm_wrapper_requests_total", route="/chat", method="POST", status="499") == before + 1


def test_at_the_cap_with_every_connection_busy_a_new_one_gets_503(fault_upstream, faults):
    faults.control(token_delay=0.2)
    w = Wrapper(fault_upstream.base_url, api_key=UPSTREAM_KEY, max_connections=16, **FAST)
    streams: list[httpx.Response] = []
    clients = [httpx.Client(timeout=30) for _ in range(16)]
    try:
        for c in clients:  # 16 streams in progress: none of them waits for a request head
            req = c.build_request("POST", w.url + "/chat", json={"messages": [{"role": "user", "content": "x" * 300}],
                                                                 "stream": True})
            r = c.send(req, stream=True)
            assert r.status_code == 200
            streams.append(r)
        r = httpx.get(w.url + "/health", timeout=10)
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert "too many open connections (the limit is 16)" in r.json()["error"]["message"]
    finally:
        for r in streams:
            r.close()
        for c in clients:
            c.close()
    wait_for(lambda: faults.stats()["active_streams"] == 0, what="the streams to end")
    assert sample(w, "vllm_wrapper_connections_closed_total", reason="over_limit") == 1
    w.stop()


# -- 2. caps and rate limits -----------------------------------------------------------------------


def test_n_is_capped_at_4_by_default_before_anything_reaches_vllm(fault_wrapper, faults):
    client = openai.OpenAI(base_url=fault_wrapper.base_url, api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="fake-echo", messages=MSG, n=1000)
    assert exc.value.param == "n" and "at most 4" in exc.value.message
    with pytest.raises(openai.BadRequestError) as exc:
        client.completions.create(model="fake-echo", prompt="x", n=5)
    assert exc.value.param == "n"
    assert faults.stats()["requests"] == 0
    assert client.chat.completions.create(model="fake-echo", messages=MSG, n=4).choices


@pytest.fixture(scope="module")
def capped(fault_upstream) -> Iterator[Wrapper]:
    w = Wrapper(fault_upstream.base_url, api_key=UPSTREAM_KEY, max_n=2, max_completion_tokens=50,
                max_prompt_chars=100, **FAST)
    yield w
    w.stop()


@pytest.mark.parametrize(
    "path,body,param,limit",
    [
        ("/v1/chat/completions", {"messages": MSG, "n": 3}, "n", 2),
        ("/v1/completions", {"prompt": "x", "n": 3}, "n", 2),
        ("/v1/chat/completions", {"messages": MSG, "max_tokens": 51}, "max_tokens", 50),
        ("/v1/chat/completions", {"messages": MSG, "max_completion_tokens": 51}, "max_completion_tokens", 50),
        ("/v1/completions", {"prompt": "x", "max_tokens": 51}, "max_tokens", 50),
        ("/chat", {"messages": MSG, "max_tokens": 51}, "max_tokens", 50),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "y" * 101}]}, "messages", 100),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "text", "text": "y" * 60}]},
                                               {"role": "user", "content": "z" * 41}]}, "messages", 100),
        ("/v1/completions", {"prompt": "y" * 101}, "prompt", 100),
        ("/v1/completions", {"prompt": ["y" * 50, "z" * 51]}, "prompt", 100),
        ("/chat", {"messages": [{"role": "user", "content": "y" * 101}]}, "messages", 100),
    ],
)
def test_caps_are_a_400_naming_the_parameter_and_the_limit(capped, faults, path, body, param, limit):
    err = err_of(httpx.post(capped.url + path, json=body), 400)
    assert err["param"] == param and err["code"] == "limit_exceeded" and err["type"] == "BadRequestError"
    assert f"'{param}'" in err["message"] and f"at most {limit}" in err["message"]
    assert faults.stats()["requests"] == 0


def test_requests_within_the_caps_pass(capped, faults):
    r = httpx.post(capped.url + "/v1/completions", json={"prompt": "y" * 100, "n": 2, "max_tokens": 50})
    assert r.status_code == 200
    # /chat's default max_tokens (2048) is lowered to the cap instead of being refused.
    r = httpx.post(capped.url + "/chat", json={"messages": MSG})
    assert r.status_code == 200
    assert '"max_tokens":50' in faults.last()["body"]


def test_request_rate_limit_is_429_with_retry_after_per_caller(fault_upstream, faults):
    w = Wrapper(fault_upstream.base_url, api_key=UPSTREAM_KEY, rate_limit_requests=3, **FAST)
    try:
        alice = openai.OpenAI(base_url=w.base_url, api_key="alice", max_retries=0)
        for _ in range(3):
            alice.chat.completions.create(model="fake-echo", messages=MSG)
        with pytest.raises(openai.RateLimitError) as exc:
            alice.chat.completions.create(model="fake-echo", messages=MSG)
        assert 1 <= int(exc.value.response.headers["retry-after"]) <= 20  # 1 request every 20 s
        assert "3 requests per minute" in exc.value.message
        r = httpx.post(w.url + "/chat", json={"messages": MSG}, headers={"Authorization": "Bearer alice"})
        assert err_of(r, 429)["code"] == "rate_limit_exceeded"
        # Another caller has its own allowance.
        bob = openai.OpenAI(base_url=w.base_url, api_key="bob", max_retries=0)
        assert bob.chat.completions.create(model="fake-echo", messages=MSG).choices
        assert faults.stats()["requests"] == 4
    finally:
        w.stop()


def test_token_rate_limit_charges_what_vllm_reports(fault_upstream, faults):
    w = Wrapper(fault_upstream.base_url, api_key=UPSTREAM_KEY, rate_limit_tokens=60, **FAST)
    try:
        long = [{"role": "user", "content": "y" * 90}]  # echo model: 31 prompt + 30 completion tokens
        r = httpx.post(w.url + "/chat", json={"messages": long, "max_tokens": 30})
        assert r.status_code == 200 and r.json()["usage"]["total_tokens"] == 61
        r = httpx.post(w.base_url + "/chat/completions", json={"messages": MSG})
        err = err_of(r, 429)
        assert "60 tokens per minute" in err["message"] and int(r.headers["retry-after"]) >= 1
    finally:
        w.stop()


@pytest.mark.parametrize(
    "var,value",
    [("VLLM_MAX_N", "many"), ("VLLM_MAX_COMPLETION_TOKENS", "-3"), ("VLLM_MAX_PROMPT_CHARS", "1.5"),
     ("VLLM_RATE_LIMIT_REQUESTS", "fast"), ("VLLM_RATE_LIMIT_TOKENS", "-1"), ("VLLM_MAX_CONNECTIONS", "3"),
     ("VLLM_HEADER_TIMEOUT", "0"), ("VLLM_BODY_TIMEOUT", "never"), ("VLLM_KEEPALIVE_TIMEOUT", "0")],
)
def test_bad_limit_settings_stop_the_start_with_one_line(var, value, monkeypatch, capsys, tmp_path):
    out = start_in_process({var: value}, monkeypatch, capsys, tmp_path)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vllm-wrapper: invalid configuration: ") and var in lines[0]


# -- 3. /health never blocks -------------------------------------------------------------------------


def test_health_answers_at_once_while_a_probe_hangs(fault_upstream, faults):
    w = Wrapper(fault_upstream.base_url, api_key=UPSTREAM_KEY, **{**FAST, "health_timeout": 30})
    try:
        faults.reset()
        assert httpx.get(w.url + "/health").json()["vllm_available"] is True  # the first waits for a probe
        faults.control(health_delay=60)
        checks = faults.stats()["health_checks"]
        httpx.get(w.url + "/health", timeout=5)  # starts a background probe, which now hangs
        wait_for(lambda: faults.stats()["health_checks"] > checks, what="the background probe")
        # A kubelet probe with its default 1 s timeout is answered while the probe hangs (30 s).
        for _ in range(3):
            r = httpx.get(w.url + "/health", timeout=1)
            assert r.status_code == 200 and r.json()["vllm_available"] is True  # the last known state
        assert faults.stats()["health_checks"] == checks + 1  # one probe at a time
    finally:
        w.stop()


def test_a_request_that_cannot_reach_vllm_marks_health_unavailable(fault_upstream, faults):
    w = Wrapper(fault_upstream.base_url, api_key=UPSTREAM_KEY, **{**FAST, "health_cache_seconds": 300})
    try:
        assert httpx.get(w.url + "/health").json()["vllm_available"] is True
        faults.control(drop_count=100)
        r = httpx.post(w.base_url + "/chat/completions", json={"messages": MSG})
        assert "cannot reach the model server" in err_of(r, 503)["message"]
        h = httpx.get(w.url + "/health").json()
        assert h["vllm_available"] is False and h["status"] == "degraded"
    finally:
        w.stop()


# -- 4. credentials and internal URLs ----------------------------------------------------------------


def _run_wrapper(env: dict[str, str]) -> subprocess.CompletedProcess:
    import os

    full = {k: v for k, v in os.environ.items() if not k.startswith("VLLM_")}
    full.update(env)
    return subprocess.run([sys.executable, "-m", "wrapper"], cwd=REPO, env=full, capture_output=True, text=True,
                          timeout=60)


def test_credentials_in_the_base_url_are_refused_at_start_up():
    out = _run_wrapper({"VLLM_BASE_URL": "http://vllm-user:s3cret-pass@127.0.0.1:9/v1"})
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "VLLM_BASE_URL" in lines[0] and "VLLM_API_KEY" in lines[0], out.stderr
    assert "s3cret-pass" not in out.stderr + out.stdout and "vllm-user" not in out.stderr + out.stdout


@pytest.fixture(scope="module")
def keyed_wrapper(fault_upstream) -> Iterator[Wrapper]:
    """A wrapper that asks for a key (VLLM_WRAPPER_API_KEY), shared by the tests below that only send requests."""
    w = Wrapper(fault_upstream.base_url, api_key=UPSTREAM_KEY, wrapper_api_key=KEY, **FAST)
    try:
        yield w
    finally:
        w.stop()


def test_internal_url_only_for_key_holders(fault_upstream, faults, keyed_wrapper):
    w = keyed_wrapper
    internal = fault_upstream.url.removeprefix("http://")
    for path in ("/", "/health"):
        anonymous = httpx.get(w.url + path)
        assert anonymous.status_code == 200 and internal not in anonymous.text, path
        wrong = httpx.get(w.url + path, headers={"Authorization": "Bearer nope"})
        assert internal not in wrong.text
        assert internal in httpx.get(w.url + path, headers={"Authorization": f"Bearer {KEY}"}).text
    assert httpx.get(w.url + "/health").json()["base_url"] is None
    assert httpx.get(w.url + "/health").json()["vllm_available"] is True


# -- 5. ambiguous requests ---------------------------------------------------------------------------


def test_two_authorization_headers_are_a_400(faults, keyed_wrapper):
    w = keyed_wrapper
    for second in (f"Bearer {KEY}", "Bearer wrong"):
        headers = [("Authorization", "Bearer wrong"), ("Authorization", second)]
        for path in ("/chat", "/v1/chat/completions"):
            err = err_of(httpx.post(w.url + path, json={"messages": MSG}, headers=headers), 400)
            assert err["param"] == "Authorization" and "more than one Authorization header" in err["message"]
    assert faults.stats()["requests"] == 0


@pytest.mark.parametrize("path", ["/chat", "/v1/chat/completions", "/v1/completions"])
@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", None])
def test_post_routes_require_application_json(fault_wrapper, faults, path, ctype):
    # vLLM answers a non-JSON Content-Type 400 too (vLLM 0.32 vllm/entrypoints/serve/utils/api_utils.py validate_json_request,
    # RequestValidationError -> 400), and text/plain is what a page may send without a CORS preflight.
    body = b'{"messages": [{"role": "user", "content": "hi"}], "prompt": "hi"}'
    headers = {"Content-Type": ctype} if ctype else {}
    err = err_of(httpx.post(fault_wrapper.url + path, content=body, headers=headers), 400)
    assert err["param"] == "Content-Type" and "Content-Type must be application/json" in err["message"]
    assert repr(ctype or "none") in err["message"]
    assert faults.stats()["requests"] == 0
    ok = httpx.post(fault_wrapper.url + path, content=body,
                    headers={"Content-Type": "Application/JSON; charset=utf-8"})
    assert ok.status_code == 200, ok.text


# -- 6. accounting -----------------------------------------------------------------------------------


def test_a_stream_the_client_leaves_is_counted_and_logged_as_499(fault_wrapper, faults):
    faults.control(token_delay=0.05)
    long = [{"role": "user", "content": "x" * 3000}]
    for path in ("/v1/chat/completions", "/chat"):
        before = sample(fault_wrapper, "vllm_wrapper_requests_total", route=path, method="POST", status="499")
        rid = f"left-{path.replace('/', '-')}"
        with httpx.stream("POST", fault_wrapper.url + path, json={"messages": long, "stream": True},
                          headers={"X-Request-ID": rid}, timeout=10) as r:
            next(r.iter_bytes())
        line = wait_for(lambda: next((x for x in fault_wrapper.log().splitlines() if f'"request_id":"{rid}"' in x),
                                     None))
        assert '"status":499' in line
        after = sample(fault_wrapper, "vllm_wrapper_requests_total", route=path, method="POST", status="499")
        assert after == before + 1


# -- offline /docs -----------------------------------------------------------------------------------


def test_docs_page_and_its_assets_come_from_the_wrapper(faults, keyed_wrapper):
    import re

    w = keyed_wrapper
    page = httpx.get(w.url + "/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    refs = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert refs and all(ref.startswith("/docs/assets/") for ref in refs), refs
    assert "https://" not in page.text and "http://" not in page.text
    for ref in refs:  # open like /docs itself: a browser fetches them without the key
        r = httpx.get(w.url + ref)
        assert r.status_code == 200, ref
    js = httpx.get(w.url + "/docs/assets/swagger-ui-bundle.js")
    assert "javascript" in js.headers["content-type"] and "SwaggerUIBundle" in js.text
    assert httpx.get(w.url + "/openapi.json").json()["paths"]["/chat"]

