"""Prometheus metrics (one registry per app, so tests can run several apps)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

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


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "vllm_wrapper_requests", "HTTP requests answered", ["route", "method", "status"], registry=r
        )
        self.latency = Histogram(
            "vllm_wrapper_request_duration_seconds",
            "Time to the end of the response (streams: to the last byte)",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=r,
        )
        self.tokens = Counter(
            "vllm_wrapper_tokens", "Tokens reported by the model server", ["route", "kind"], registry=r
        )
        self.streams = Gauge("vllm_wrapper_streams_in_flight", "Streamed responses in progress", registry=r)
        self.upstream_errors = Counter(
            "vllm_wrapper_upstream_errors", "Failures talking to the model server", ["kind"], registry=r
        )
        self._req_children: dict[tuple[str, str, int], Counter] = {}
        self._lat_children: dict[str, Histogram] = {}
        self._tok_children: dict[tuple[str, str], Counter] = {}

    def observe(self, path: str, method: str, status: int, seconds: float) -> None:
        route = path if path in ROUTES else "other"
        key = (route, method, status)
        c = self._req_children.get(key)
        if c is None:
            c = self._req_children[key] = self.requests.labels(route, method, str(status))
        c.inc()
        h = self._lat_children.get(route)
        if h is None:
            h = self._lat_children[route] = self.latency.labels(route)
        h.observe(seconds)

    def count_usage(self, route: str, usage: object) -> None:
        if not isinstance(usage, dict):
            return
        note_usage(usage)  # the caller's token bucket, when token rate limits are on
        for kind in ("prompt_tokens", "completion_tokens"):
            n = usage.get(kind)
            if isinstance(n, int) and n > 0:
                key = (route, kind)
                c = self._tok_children.get(key)
                if c is None:
                    c = self._tok_children[key] = self.tokens.labels(route, kind.removesuffix("_tokens"))
                c.inc(n)

    def render(self) -> bytes:
        return generate_latest(self.registry)
