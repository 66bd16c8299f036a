"""The per-request series, kept as plain numbers (wrapper/metrics.py), scrape exactly as
prometheus_client's own Counter and Histogram with the same names, help and buckets would."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from wrapper.metrics import DURATION_BUCKETS, Metrics

# (path, method, status, seconds): on a bucket bound, between bounds, past the last, unlisted path.
REQUESTS = [
    ("/v1/chat/completions", "POST", 200, 0.0004),
    ("/v1/chat/completions", "POST", 200, 0.001),
    ("/v1/chat/completions", "POST", 200, 0.0011),
    ("/v1/completions", "POST", 413, 0.0),
    ("/chat", "POST", 499, 500.0),
    ("/no/such/path", "GET", 404, 2.5),
]
USAGE = [
    ("/chat", {"prompt_tokens": 3, "completion_tokens": 5}),
    ("/chat", {"prompt_tokens": 0, "completion_tokens": 2}),
]


def reference(requests, usage) -> bytes:
    """What the same traffic gives through prometheus_client's Counter and Histogram."""
    r = CollectorRegistry()
    count = Counter("vllm_wrapper_requests", "HTTP requests answered", ["route", "method", "status"], registry=r)
    duration = Histogram(
        "vllm_wrapper_request_duration_seconds",
        "Time to the end of the response (streams: to the last byte)",
        ["route"],
        buckets=DURATION_BUCKETS,
        registry=r,
    )
    tokens = Counter("vllm_wrapper_tokens", "Tokens reported by the model server", ["route", "kind"], registry=r)
    for path, method, status, seconds in requests:
        route = path if path != "/no/such/path" else "other"
        count.labels(route, method, str(status)).inc()
        duration.labels(route).observe(seconds)
    for route, u in usage:
        for kind in ("prompt", "completion"):
            if u[f"{kind}_tokens"] > 0:
                tokens.labels(route, kind).inc(u[f"{kind}_tokens"])
    return generate_latest(r)


@pytest.mark.parametrize("n", [0, 1, len(REQUESTS)], ids=["nothing yet", "one request", "all"])
def test_request_series_render_as_prometheus_client_would(n: int) -> None:
    m = Metrics()
    for request in REQUESTS[:n]:
        m.observe(*request)
    for route, u in USAGE[: n and None]:
        m.count_usage(route, u)

    others = (b"vllm_wrapper_streams_in_flight", b"vllm_wrapper_upstream_errors")
    ours = b"".join(line + b"\n" for line in m.render().splitlines() if not any(o in line for o in others))

    assert ours == reference(REQUESTS[:n], USAGE[: n and None])
