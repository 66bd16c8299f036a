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


class Resolver:
    """Stands in for cluster DNS (none runs here): ``name`` resolves to ``address``, which the test
    changes the way a rescheduled pod's record changes; every lookup is counted."""

    def __init__(self, name: str, address: str) -> None:
        self.name, self.address, self.lookups = name, address, 0

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        real = loop.getaddrinfo

        async def getaddrinfo(host, port, *args, **kwargs):
            if host == self.name:
                self.lookups += 1
                host = self.address
            return await real(host, port, *args, **kwargs)

        loop.getaddrinfo = getaddrinfo  # type: ignore[method-assign]


class Pod:
    """A loopback HTTP server that answers every request with ``who`` (keep-alive)."""

    def __init__(self, who: bytes) -> None:
        self.who = who
        self.open: set[asyncio.StreamWriter] = set()
        self.server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> Pod:
        self.server = await asyncio.start_server(self.serve, host, port)
        return self

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Gone, as a deleted pod is: nothing listens, and its connections are closed."""
        assert self.server is not None
        self.server.close()
        for w in list(self.open):
            w.close()
        await self.server.wait_closed()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        who = self.who
        self.open.add(writer)
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    ),
                    0,
                )
                await reader.readexactly(length)
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                    % (len(who), who)
                )
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.open.discard(writer)
            writer.close()


def test_a_rescheduled_pod_s_new_address_is_used_from_the_first_failed_connect():
    # A pod comes back under the same DNS name with a new IP. The old IP refuses connections
    # (nothing listens there any more); the wrapper must then resolve the name again at once,
    # not keep dialling a cached address (aiohttp keeps it for ttl_dns_cache seconds, failures
    # or not: aiohttp/connector.py, _DNSCacheTable).
    name = "vllm-0.vllm-headless.ns.svc.cluster.local"

    async def scenario() -> None:
        old = await Pod(b'"old pod"').start("127.0.0.1", 0)
        port = old.port
        dns = Resolver(name, "127.0.0.1")
        dns.install(asyncio.get_running_loop())
        up = Upstream(
            Settings(base_url=f"http://{name}:{port}/v1,http://vllm-1.invalid:{port}/v1", routing="round-robin")
        )
        await up.start()
        try:
            assert up.client.dns_ttl == DNS_CACHE_SECONDS <= 5  # at most CoreDNS's default TTL
            first = await up.call("GET", "/models")
            if first.body != b'"old pod"':  # round-robin started on the other (unresolvable) name
                first = await up.call("GET", "/models")
            assert first.body == b'"old pod"'
            assert dns.lookups == 1

            await old.stop()
            new = await Pod(b'"new pod"').start("127.0.0.2", port)
            dns.address = "127.0.0.2"
            try:
                for _ in range(4):  # the failover sends some attempts to vllm-1 (never resolves)
                    reply = await up.call("GET", "/models")
                    if reply.body == b'"new pod"':
                        break
                assert reply.body == b'"new pod"'
                assert dns.lookups == 2  # one new lookup, right after the refused connect
            finally:
                await new.stop()
        finally:
            await up.close()

    asyncio.run(scenario())
