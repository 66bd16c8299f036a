"""``/metrics`` series of the router, read from its plain counters at scrape time (nothing on the
request path touches prometheus_client). Labelled by replica name: bounded by the replica count.

    vllm_wrapper_backend_requests_total{backend}     attempts sent to the replica
    vllm_wrapper_backend_failures_total{backend}     attempts that failed (connect error, 502/503/504)
    vllm_wrapper_backend_ejections_total{backend}    times it was taken out of rotation
    vllm_wrapper_backend_in_flight{backend}          requests in flight to it from this process
    vllm_wrapper_backend_in_rotation{backend}        1 while it takes new requests
    vllm_wrapper_routing_decisions_total{policy,decision}
        affinity (prefix: the key's replica), spilled (prefix: that replica over its load
        bound), least_load, round_robin, failover (a retry on another replica)
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from .router import Router


class RouterCollector:
    def __init__(self, router: Router) -> None:
        self.router = router

    def collect(self) -> Iterator[Metric]:
        members = self.router.pool.members
        fams = {
            "requests": CounterMetricFamily(
                "vllm_wrapper_backend_requests", "Attempts sent to each vLLM replica", labels=["backend"]
            ),
            "failed": CounterMetricFamily(
                "vllm_wrapper_backend_failures", "Attempts that failed (connect error, 502/503/504)", labels=["backend"]
            ),
            "ejections": CounterMetricFamily(
                "vllm_wrapper_backend_ejections", "Times a replica was ejected", labels=["backend"]
            ),
        }
        in_flight = GaugeMetricFamily(
            "vllm_wrapper_backend_in_flight", "Requests in flight to each replica", labels=["backend"]
        )
        rotation = GaugeMetricFamily(
            "vllm_wrapper_backend_in_rotation", "1 while the replica takes new requests", labels=["backend"]
        )
        for b in members:
            for attr, fam in fams.items():
                fam.add_metric([b.name], getattr(b, attr))
            in_flight.add_metric([b.name], b.in_flight)
            rotation.add_metric([b.name], 0 if b.ejected else 1)
        decisions = CounterMetricFamily(
            "vllm_wrapper_routing_decisions", "Routing decisions by kind", labels=["policy", "decision"]
        )
        for decision, n in sorted(self.router.decisions.items()):
            decisions.add_metric([self.router.policy.name, decision], n)
        yield from fams.values()
        yield in_flight
        yield rotation
        yield decisions


__all__ = ["RouterCollector"]
