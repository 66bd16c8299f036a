"""Issue 21: the pass-through routes are served from the connection (``wrapper/fast_lane.py``)
and answer on the wire exactly as the ASGI path does, against the real wrapper process and the
real fault upstream. ``/v1/chat/completions?x=1`` is not a fast-lane target (a query string), so
it goes through uvicorn and the ASGI gateway: each comparison below sends both."""

from __future__ import annotations

import socket

import httpx
import orjson
import pytest

from tests.wrapper._wrapper_servers import Wrapper
from tests.wrapper.conftest import FAST
from tests.wrapper.test_wrapper_api import logged

BODY = orjson.dumps({"messages": [{"role": "user", "content": "hello"}], "max_tokens": 4})
FAST_LANE = "/v1/chat/completions"
ASGI_PATH = "/v1/chat/completions?x=1"


def post(target: str, body: bytes = BODY, extra: bytes = b"", version: bytes = b"1.1") -> bytes:
    return b"POST %s HTTP/%s\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s" % (
        target.encode(),
        version,
        len(body),
        extra,
        body,
    )


class Wire:
    """One raw client connection that reads whole HTTP/1.1 responses (fixed-length or chunked)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.buf = b""

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buf += chunk
        return bool(chunk)

    def head(self) -> tuple[int, dict[str, str]]:
        while b"\r\n\r\n" not in self.buf:
            assert self._fill(), f"closed before a response head: {self.buf!r}"
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            assert name.lower() not in headers, f"header {name} sent twice"
            headers[name.lower()] = value.strip()
        return int(lines[0].split()[1]), headers

    def response(self) -> tuple[int, dict[str, str], bytes]:
        status, headers = self.head()
        if status < 200:
            return status, headers, b""
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                while b"\r\n" not in self.buf:
                    assert self._fill()
                size_line, _, self.buf = self.buf.partition(b"\r\n")
                size = int(size_line, 16)
                while len(self.buf) < size + 2:
                    assert self._fill()
                body += self.buf[:size]
                self.buf = self.buf[size + 2 :]
                if size == 0:
                    return status, headers, body
        length = int(headers["content-length"])
        while len(self.buf) < length:
            assert self._fill()
        body, self.buf = self.buf[:length], self.buf[length:]
        return status, headers, body

    def closed_by_server(self) -> bool:
        return not self.buf and not self._fill()


@pytest.fixture
def wire(fault_wrapper: Wrapper):
    w = Wire(fault_wrapper.port)
    yield w
    w.close()


def same_shape(a: dict[str, str], b: dict[str, str]) -> None:
    """The headers a client relies on, equal on both paths (the request id differs by design)."""
    for name in ("content-type", "connection", "transfer-encoding", "cache-control", "date"):
        assert (name in a) == (name in b), f"{name}: {a.get(name)!r} vs {b.get(name)!r}"
        if name != "date":
            assert a.get(name) == b.get(name), name
    assert a["x-request-id"] and b["x-request-id"]


def test_an_answer_is_the_same_on_the_fast_lane_and_the_asgi_path(faults, wire):
    answers = []
    for target in (FAST_LANE, ASGI_PATH):
        wire.send(post(target, extra=b"X-Request-Id: lane-test-1\r\n"))
        answers.append(wire.response())
    (s1, h1, b1), (s2, h2, b2) = answers
    assert s1 == s2 == 200
    same_shape(h1, h2)
    assert h1["x-request-id"] == h2["x-request-id"] == "lane-test-1"
    assert orjson.loads(b1)["choices"][0]["message"] == orjson.loads(b2)["choices"][0]["message"]
    assert faults.last()["headers"]["x-request-id"] == "lane-test-1"


def test_a_stream_is_the_same_on_both_paths(faults, wire):
    body = orjson.dumps({"messages": [{"role": "user", "content": "hello world"}], "stream": True})
    answers = []
    for target in (FAST_LANE, ASGI_PATH):
        wire.send(post(target, body))
        answers.append(wire.response())
    (s1, h1, b1), (s2, h2, b2) = answers
    assert s1 == s2 == 200
    same_shape(h1, h2)
    assert h1["transfer-encoding"] == "chunked"
    assert b1.endswith(b"data: [DONE]\n\n") and b1.count(b"data: ") == b2.count(b"data: ")


@pytest.mark.parametrize(
    ("extra", "body", "status"),
    [
        (b"Authorization: Bearer a\r\nAuthorization: Bearer b\r\n", BODY, 400),
        (b"", b"[1, 2]", 400),
        (b"", b'{"messages": []}', 400),
        (b"", b"not json", 400),
    ],
)
def test_refusals_are_the_same_on_both_paths(faults, wire, extra, body, status):
    answers = []
    for target in (FAST_LANE, ASGI_PATH):
        wire.send(post(target, body, extra))
        answers.append(wire.response())
    (s1, h1, b1), (s2, h2, b2) = answers
    assert s1 == s2 == status
    same_shape(h1, h2)
    assert b1 == b2


def test_pipelined_requests_are_answered_in_order(faults, wire):
    # Three requests in one write: fast lane, uvicorn (GET), fast lane.
    wire.send(
        post(FAST_LANE, extra=b"X-Request-Id: p1\r\n")
        + b"GET /v1/models HTTP/1.1\r\nHost: t\r\nX-Request-Id: p2\r\n\r\n"
        + post(FAST_LANE, extra=b"X-Request-Id: p3\r\n")
    )
    ids = []
    for _ in range(3):
        status, headers, _ = wire.response()
        assert status == 200
        ids.append(headers["x-request-id"])
    assert ids == ["p1", "p2", "p3"]


def test_expect_100_continue_gets_its_interim_answer_before_the_body(faults, wire):
    head, _, body = post(FAST_LANE, extra=b"Expect: 100-continue\r\n").partition(b"\r\n\r\n")
    wire.send(head + b"\r\n\r\n")
    status, _ = wire.head()
    assert status == 100
    wire.send(body)
    status, _, answer = wire.response()
    assert status == 200 and orjson.loads(answer)["choices"]


def test_http_1_0_is_answered_and_closed(faults, wire):
    wire.send(post(FAST_LANE, version=b"1.0"))
    status, headers, _ = wire.response()
    assert status == 200
    assert headers["connection"] == "close"
    assert wire.closed_by_server()


def test_a_chunked_body_over_the_limit_is_413_and_never_forwarded(fault_upstream, faults):
    w = Wrapper(fault_upstream.base_url, api_key="upstream-secret-key", max_body_bytes=1024, **FAST)
    try:
        before = faults.stats()["requests"]
        wire = Wire(w.port)
        wire.send(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        piece = b"x" * 600
        for _ in range(2):
            wire.send(b"%x\r\n%s\r\n" % (len(piece), piece))
        status, headers, body = wire.response()
        assert status == 413
        assert headers["connection"] == "close"
        assert orjson.loads(body)["error"]["code"] == "request_too_large"
        assert wire.closed_by_server()
        assert faults.stats()["requests"] == before
        assert w.metric("vllm_wrapper_requests_total", route="/v1/chat/completions", method="POST", status="413") == 1
    finally:
        w.stop()


def test_the_fast_lane_counts_in_the_metrics_and_the_access_log(fault_wrapper, faults):
    before = fault_wrapper.metric(
        "vllm_wrapper_requests_total", route="/v1/chat/completions", method="POST", status="200"
    )
    headers = {"Content-Type": "application/json", "X-Request-Id": "lane-logged"}
    r = httpx.post(fault_wrapper.url + FAST_LANE, content=BODY, headers=headers)
    assert r.status_code == 200
    after = fault_wrapper.metric(
        "vllm_wrapper_requests_total", route="/v1/chat/completions", method="POST", status="200"
    )
    assert after == before + 1
    lines = [orjson.loads(line) for line in logged(fault_wrapper, "lane-logged").splitlines() if "lane-logged" in line]
    assert [(x["logger"], x["path"], x["status"]) for x in lines] == [("wrapper.access", FAST_LANE, 200)]
