"""Active readiness: a replica whose /health fails stops getting requests, with no request
failing and no discovery; the wrapper's HTTP client re-resolves replica names within seconds.

On Kubernetes the program hands the wrapper each vLLM pod's DNS name under the headless
Service (components/manifests.py, ``Names.vllm_urls``). That Service publishes not-ready pods
too (``publishNotReadyAddresses: true``) and CoreDNS answers with a TTL of 5-30 s, so neither a
pod turning unready nor its record changing reaches the wrapper fast by DNS; the wrapper's own
probe of every replica's ``/health`` (the endpoint the kubelet's readinessProbe asks) does.
wrapper/routing/README.md has the whole argument.
"""

from __future__ import annotations

import asyncio

import httpx

from tests.routing._servers import FAST, Replica, Wrapper, counts, eventually, wrapper_metrics
from wrapper.routing import DNS_CACHE_SECONDS
from wrapper.settings import Settings
from wrapper.upstream import Upstream

MSG = [{"role": "user", "content": "hello there"}]


def chat(w: Wrapper, i: int) -> httpx.Response:
    # Thirty different conversations: prefix routing spreads them over every replica.
    msgs = [{"role": "user", "content": f"conversation {i} starts here"}]
    return httpx.post(w.base_url + "/chat/completions", json={"messages": msgs, "max_tokens": 4}, timeout=10)


def in_rotation(w: Wrapper, r: Replica) -> float:
    return wrapper_metrics(w)[f'vllm_wrapper_backend_in_rotation{{backend="127.0.0.1:{r.port}"}}']


def test_a_replica_whose_health_fails_gets_no_new_requests_until_it_passes_again():
    replicas = [Replica() for _ in range(3)]
    # Production ejection settings (3 failures, 5 s out): only the probe interval is the wrapper's own.
    w = Wrapper(",".join(r.base_url for r in replicas), **{**FAST, "eject_after": 3, "eject_seconds": 5})
    try:
        unready = replicas[1]
        before = counts(replicas)
        assert all(chat(w, i).status_code == 200 for i in range(30))
        assert counts(replicas)[1] > before[1]  # it had its share

        # Not ready, yet still answering requests (as a pod whose readiness probe fails is):
        # no request fails, so only the wrapper's own probes can take it out.
        unready.control(health_status=503)
        eventually(lambda: in_rotation(w, unready) == 0, "the failing /health takes the replica out")
        health = httpx.get(w.url + "/health", timeout=5).json()
        assert [r["ready"] for r in health["replicas"]] == [True, False, True]
        before = counts(replicas)
        assert all(chat(w, i).status_code == 200 for i in range(30))
        assert counts(replicas)[1] == before[1]
        m = wrapper_metrics(w)
        assert m[f'vllm_wrapper_backend_failures_total{{backend="127.0.0.1:{unready.port}"}}'] == 0  # no request failed

        unready.control(health_status=200)
        eventually(lambda: in_rotation(w, unready) == 1, "a passing /health lets it back in")
        before = counts(replicas)
        assert all(chat(w, i).status_code == 200 for i in range(30))
        assert counts(replicas)[1] > before[1]
    finally:
        w.stop()
        for r in replicas:
            r.stop()


def test_the_http_client_keeps_a_resolved_name_for_seconds_not_minutes():
    # aiohttp caches each host's addresses for ttl_dns_cache seconds and never drops them when a
    # connect fails (aiohttp/connector.py: TCPConnector(ttl_dns_cache=...) -> _DNSCacheTable(ttl=...)):
    # that TTL is how long a rescheduled pod's new IP stays unseen.
    async def ttl() -> float | None:
        up = Upstream(
            Settings(
                base_url="http://vllm-0.vllm-headless.ns.svc.cluster.local:8000/v1,http://vllm-1.vllm-headless.ns.svc.cluster.local:8000/v1"
            )
        )
        await up.start()
        try:
            return up.session.connector._cached_hosts._ttl  # type: ignore[union-attr]
        finally:
            await up.close()

    assert asyncio.run(ttl()) == DNS_CACHE_SECONDS <= 5
