"""Prometheus metrics (one registry per app, so tests can run several apps).

The per-request series (requests, their duration, tokens) are plain numbers the gateway adds
to, turned into metric families at scrape time by :class:`RequestCollector`, as the router's
series are (``wrapper/routing/metrics.py``): prometheus_client's ``Counter.inc`` and
``Histogram.observe`` take a lock per call and walk the buckets in Python, about 5 µs of a
request's 75 µs under ``benchmarks/wrapper_bench.py``'s load. Everything that adds to them runs
on the event loop's thread, and so does the ``/metrics`` route that reads them.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.utils import floatToGoString

from .limits import note_usage

disable_created_metrics()  # no *_created series: less noise, less work per scrape

# Paths with their own label; anything else is "other" (keeps label cardinality bounded).
ROUTES = frozenset(
    {
        "/chat",
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/models",
        "/models",
        "/health",
        "/metrics",
        "/",
        "/docs",
        "/openapi.json",
    }
)


DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_BUCKET_LABELS = [floatToGoString(b) for b in DURATION_BUCKETS] + ["+Inf"]


class Durations:
    """One route's request durations: a count per bucket (not cumulative; the last is +Inf), the sum."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(DURATION_BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(DURATION_BUCKETS, seconds)] += 1  # the first bound >= seconds
        self.total += seconds


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.requests: dict[tuple[str, str, int], int] = {}  # (route, method, status) -> answered
        self.durations: dict[str, Durations] = {}
        self.tokens: dict[tuple[str, str], int] = {}  # (route, "prompt" | "completion") -> tokens
        r.register(RequestCollector(self))
        self.streams = Gauge("vllm_wrapper_streams_in_flight", "Streamed responses in progress", registry=r)
        self.upstream_errors = Counter(
            "vllm_wrapper_upstream_errors", "Failures talking to the model server", ["kind"], registry=r
        )

    def observe(self, path: str, method: str, status: int, seconds: float) -> None:
        route = path if path in ROUTES else "other"
        key = (route, method, status)
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1
        h = self.durations.get(route)
        if h is None:
            h = self.durations[route] = Durations()
        h.observe(seconds)

    def count_usage(self, route: str, usage: object) -> None:
        if not isinstance(usage, dict):
            return
        note_usage(usage)  # the caller's token bucket, when token rate limits are on
        tokens = self.tokens
        for kind, label in (("prompt_tokens", "prompt"), ("completion_tokens", "completion")):
            n = usage.get(kind)
            if isinstance(n, int) and n > 0:
                key = (route, label)
                tokens[key] = tokens.get(key, 0) + n

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestCollector:
    """``vllm_wrapper_requests_total``, ``vllm_wrapper_request_duration_seconds`` and
    ``vllm_wrapper_tokens_total``, from :class:`Metrics`' numbers at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        requests = CounterMetricFamily(
            "vllm_wrapper_requests", "HTTP requests answered", labels=["route", "method", "status"]
        )
        for (route, method, status), n in list(m.requests.items()):
            requests.add_metric([route, method, str(status)], n)
        durations = HistogramMetricFamily(
            "vllm_wrapper_request_duration_seconds",
            "Time to the end of the response (streams: to the last byte)",
            labels=["route"],
        )
        for route, h in list(m.durations.items()):
            cumulative, buckets = 0, []
            for label, n in zip(_BUCKET_LABELS, h.counts, strict=True):
                cumulative += n
                buckets.append((label, cumulative))
            durations.add_metric([route], buckets, h.total)
        tokens = CounterMetricFamily(
            "vllm_wrapper_tokens", "Tokens reported by the model server", labels=["route", "kind"]
        )
        for (route, kind), n in list(m.tokens.items()):
            tokens.add_metric([route, kind], n)
        yield requests
        yield durations
        yield tokens
