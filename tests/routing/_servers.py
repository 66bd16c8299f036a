"""Replicas for the routing tests: fault upstreams (tests/wrapper/upstream_faults.py, an echo
model with vLLM's shapes) that can be stopped and started again on the same port."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence

import httpx

from tests.support.ports import free_port
from tests.wrapper._wrapper_servers import HERE, FaultUpstream, Proc, Wrapper

__all__ = ["FAST", "Replica", "Wrapper", "counts", "eventually", "wrapper_metrics"]

# Quick retries and ejection so the tests do not wait on production timings.
FAST = {"retry_backoff": 0.02, "max_retries": 3, "timeout": 5, "health_timeout": 0.5, "health_cache_seconds": 0,
        "eject_after": 2, "eject_seconds": 0.5}


class Replica(FaultUpstream):
    def __init__(self, port: int | None = None) -> None:  # noqa: D107 - FaultUpstream, on a chosen port
        port = port or free_port()
        Proc.__init__(self, [sys.executable, str(HERE / "upstream_faults.py"), "--port", str(port)], port, ready="/_stats")
        self.base_url = self.url + "/v1"

    def restart(self) -> Replica:
        return Replica(self.port)


def counts(replicas: Sequence[Replica]) -> list[int]:
    """Generation requests each replica has answered so far."""
    return [r.stats()["requests"] for r in replicas]


def wrapper_metrics(w: Wrapper) -> dict[str, float]:
    from tests.support.real_vllm import parse_metrics

    return parse_metrics(httpx.get(w.url + "/metrics", timeout=5).text)


def eventually(check: Callable[[], object], what: str, timeout: float = 30.0) -> object:
    """Wait for ``check()`` to be truthy (an event we poll for; the timeout is only a backstop)."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        time.sleep(0.05)
