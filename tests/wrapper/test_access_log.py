"""The access log's line: the same timestamp text as every other line, written in order with them."""

from __future__ import annotations

import io
import json
import logging
import time

import pytest

from wrapper import logs


@pytest.fixture
def clock(monkeypatch):
    """``time.time`` as the access log sees it, set by the test."""
    now = [0.0]
    monkeypatch.setattr(logs.time, "time", lambda: now[0])
    monkeypatch.setattr(logs, "_second", (-1, ""))
    monkeypatch.setattr(logs, "_stamp", (-1, ""))
    return now


def formatter_ts(t: float) -> str:
    record = logging.LogRecord("wrapper", logging.INFO, "", 0, "x", None, None)
    record.created, record.msecs = t, (t - int(t)) * 1000
    return json.loads(logs.JSONFormatter().format(record))["ts"]


def test_the_access_log_stamps_each_instant_as_the_other_lines_do(clock):
    start = 1_796_355_890.0291  # 2026-12-04T03:44:50.029Z
    instants = [start, start + 0.0004, start + 0.0012, start + 0.9702, start + 0.9711, start + 1.0, start + 61.5]
    stamps = []
    for t in instants:
        clock[0] = t
        stamps.append(logs._now())
    assert stamps == [formatter_ts(t) for t in instants]
    assert stamps[:3] == ["2026-12-04T03:44:50.029Z", "2026-12-04T03:44:50.029Z", "2026-12-04T03:44:50.030Z"]
    assert stamps[5:] == ["2026-12-04T03:44:51.029Z", "2026-12-04T03:45:51.529Z"]


def test_access_lines_and_other_lines_reach_stderr_in_the_order_they_were_written(monkeypatch):
    raw = io.BytesIO()
    stderr = io.TextIOWrapper(raw, encoding="utf-8")  # not line-buffered: a print() may sit in it
    monkeypatch.setattr(logs.sys, "stderr", stderr)
    other = logging.getLogger("test.access_log.other")
    handler = logging.StreamHandler(stderr)
    handler.setFormatter(logs.JSONFormatter())
    monkeypatch.setattr(other, "handlers", [handler])
    monkeypatch.setattr(other, "propagate", False)
    other.setLevel(logging.INFO)
    access = logs.AccessLog()

    other.info("before")
    print('{"msg": "printed, not flushed"}', file=stderr)
    access.write("rid-1", "POST", "/v1/chat/completions", 200, 1.5)  # no event loop: written at once
    other.info("after")
    access.write("rid-2", "GET", '/odd "path"\n', 404, 0.25)

    lines = [json.loads(line) for line in raw.getvalue().decode().splitlines()]
    assert [x["msg"] for x in lines] == ["before", "printed, not flushed", "request", "after", "request"]
    assert {k: lines[2][k] for k in ("logger", "request_id", "method", "path", "status", "duration_ms")} == {
        "logger": "wrapper.access",
        "request_id": "rid-1",
        "method": "POST",
        "path": "/v1/chat/completions",
        "status": 200,
        "duration_ms": 1.5,
    }
    assert lines[4]["path"] == '/odd "path"\n'  # still one JSON line


def test_a_stderr_without_a_byte_buffer_still_gets_the_lines(monkeypatch):
    captured = io.StringIO()  # what a capturing test harness puts in place of sys.stderr
    monkeypatch.setattr(logs.sys, "stderr", captured)
    logs.AccessLog().write("rid-3", "POST", "/v1/completions", 200, 2.0)
    (line,) = captured.getvalue().splitlines()
    assert json.loads(line)["request_id"] == "rid-3"
    assert json.loads(line)["ts"] <= time.strftime("%Y-%m-%dT%H:%M:%S.999Z", time.gmtime())


class Trickle(io.RawIOBase):
    """A raw stream taking at most 7 bytes per write, as a raw file may take part of a write."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.data += bytes(b[:7])
        return min(len(b), 7)


def test_a_write_that_takes_part_of_the_lines_is_carried_on_to_the_end(monkeypatch):
    raw = Trickle()
    monkeypatch.setattr(logs.sys, "stderr", io.TextIOWrapper(raw, encoding="utf-8", write_through=True))
    access = logs.AccessLog()
    access.write("rid-4", "POST", "/v1/chat/completions", 200, 3.25)
    access.write("rid-5", "POST", "/v1/completions", 429, 0.5)
    lines = [json.loads(line) for line in raw.data.decode().splitlines()]
    assert [(x["request_id"], x["status"]) for x in lines] == [("rid-4", 200), ("rid-5", 429)]
