"""Several replicas behind one wrapper process: spreading, affinity, failover, ejection, readmission.

The replicas are real HTTP servers (the echo upstream of tests/wrapper) so faults can be
switched on at will; tests/routing/test_real_vllm_routing.py proves the same against real vLLM.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.routing._servers import FAST, Replica, Wrapper, counts, eventually, wrapper_metrics

MSG = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def replicas() -> Iterator[list[Replica]]:
    rs = [Replica() for _ in range(3)]
    try:
        yield rs
    finally:
        for r in rs:
            r.stop()


@pytest.fixture
def live(replicas: list[Replica]) -> list[Replica]:
    for i, r in enumerate(replicas):
        if r.proc.poll() is not None:
            replicas[i] = r.restart()
        replicas[i].reset()
    return replicas


def start(replicas: list[Replica], **settings) -> Wrapper:
    return Wrapper(",".join(r.base_url for r in replicas), **{**FAST, **settings})


def chat(w: Wrapper, messages=MSG, **extra) -> httpx.Response:
    return httpx.post(w.base_url + "/chat/completions", json={"messages": messages, "max_tokens": 4, **extra}, timeout=10)


def served_by(live: list[Replica], send) -> int:
    """Index of the one replica that answered ``send()``."""
    before = counts(live)
    r = send()
    assert r.status_code == 200, r.text
    delta = [a - b for a, b in zip(counts(live), before)]
    assert sorted(delta) == [0, 0, 1], delta
    return delta.index(1)


def test_round_robin_gives_each_replica_the_same_share(live):
    w = start(live, routing="round-robin")
    try:
        before = counts(live)
        for _ in range(9):
            assert chat(w).status_code == 200
        assert [a - b for a, b in zip(counts(live), before)] == [3, 3, 3]
    finally:
        w.stop()


def test_prefix_routing_keeps_a_conversation_on_one_replica_on_every_endpoint(live):
    w = start(live)  # several URLs: prefix routing is the default
    try:
        homes = set()
        for tenant in range(6):
            system = {"role": "system", "content": f"You are tenant {tenant}'s assistant. " * 20}
            turn1 = [system, {"role": "user", "content": "first question"}]
            turn2 = turn1 + [{"role": "assistant", "content": "an answer"}, {"role": "user", "content": "and then?"}]
            seen = {
                served_by(live, lambda: chat(w, turn1)),
                served_by(live, lambda: chat(w, turn2, stream=True)),
                served_by(live, lambda: httpx.post(w.url + "/chat", json={"messages": turn2, "max_tokens": 4}, timeout=10)),
                served_by(live, lambda: httpx.post(w.url + "/chat", json={"messages": turn1, "stream": True, "max_tokens": 4}, timeout=10)),
            }
            assert len(seen) == 1, f"tenant {tenant} went to replicas {seen}"
            homes |= seen
        assert len(homes) > 1  # different tenants do not all share one replica
        m = wrapper_metrics(w)
        assert m['vllm_wrapper_routing_decisions_total{decision="affinity",policy="prefix"}'] == 24
        health = httpx.get(w.url + "/health").json()
        assert health["routing"] == "prefix"
        assert [r["url"] for r in health["replicas"]] == [r.base_url for r in live]
        assert all(r["ready"] and r["in_flight"] == 0 for r in health["replicas"])
    finally:
        w.stop()


def test_least_load_sends_to_the_replica_with_fewest_requests_in_flight(live):
    import concurrent.futures

    w = start(live, routing="least-load")
    try:
        for r in live:
            r.control(header_delay=0.5)
        before = counts(live)
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            assert all(r.status_code == 200 for r in pool.map(lambda _: chat(w), range(6)))
        assert [a - b for a, b in zip(counts(live), before)] == [2, 2, 2]
    finally:
        w.stop()


def test_a_503_is_retried_on_another_replica(live):
    w = start(live, routing="round-robin", max_retries=1)
    try:
        live[0].control(fail_status=503, fail_count=1)
        before = counts(live)
        assert chat(w).status_code == 200  # the first pick is replica 0: it answers 503
        assert sum(counts(live)) - sum(before) == 2
        assert wrapper_metrics(w)['vllm_wrapper_routing_decisions_total{decision="failover",policy="round-robin"}'] == 1
    finally:
        w.stop()


def test_a_500_from_a_dying_engine_is_tried_once_on_another_replica(live):
    # vLLM answers 500 (EngineDeadError) to what it had in flight when its engine dies.
    w = start(live, routing="round-robin", max_retries=3)
    try:
        live[0].control(fail_status=500, fail_count=1)
        before = counts(live)
        assert chat(w).status_code == 200  # the first pick is replica 0: it answers 500
        assert sum(counts(live)) - sum(before) == 2
        assert wrapper_metrics(w)['vllm_wrapper_routing_decisions_total{decision="failover",policy="round-robin"}'] == 1
    finally:
        w.stop()


def test_a_request_that_fails_with_500_everywhere_reaches_two_replicas_and_the_client_gets_the_500(live):
    # A request that crashes engines must not take the whole fleet down with it.
    w = start(live, routing="round-robin", max_retries=3)
    try:
        for r in live:
            r.control(fail_status=500, fail_count=1)
        before = counts(live)
        r = chat(w)
        assert r.status_code == 500 and r.json()["error"]["code"] == 500, r.text
        assert sum(counts(live)) - sum(before) == 2
    finally:
        w.stop()


def test_with_one_replica_a_500_is_the_answer_and_is_not_retried(live):
    w = start(live[:1], max_retries=3)
    try:
        live[0].control(fail_status=500, fail_count=1)
        before = counts(live)
        assert chat(w).status_code == 500
        assert sum(counts(live)) - sum(before) == 1
    finally:
        w.stop()


def test_a_dead_replica_fails_no_request_is_ejected_and_comes_back(live):
    w = start(live, max_retries=2)
    try:
        dead = live[1]
        dead.stop()
        prompts = [[{"role": "user", "content": f"user {i} asks"}] for i in range(30)]
        assert [chat(w, p).status_code for p in prompts] == [200] * 30
        m = wrapper_metrics(w)
        name = f"127.0.0.1:{dead.port}"
        assert m[f'vllm_wrapper_backend_ejections_total{{backend="{name}"}}'] >= 1
        assert m[f'vllm_wrapper_backend_in_rotation{{backend="{name}"}}'] == 0
        assert m['vllm_wrapper_routing_decisions_total{decision="failover",policy="prefix"}'] >= 1
        health = httpx.get(w.url + "/health").json()
        assert health["vllm_available"] and [r["ready"] for r in health["replicas"]] == [True, False, True]

        live[1] = dead.restart()  # the pod comes back on the same address
        eventually(lambda: wrapper_metrics(w)[f'vllm_wrapper_backend_in_rotation{{backend="{name}"}}'] == 1,
                   "the prober lets the replica back in")
        before = live[1].stats()["requests"]
        assert [chat(w, p).status_code for p in prompts] == [200] * 30
        assert live[1].stats()["requests"] > before
    finally:
        w.stop()


def test_a_started_stream_is_never_retried(live):
    w = start(live, routing="round-robin")
    try:
        for r in live:
            r.control(die_after=2, token_delay=0.01)
        before = counts(live)
        with httpx.stream("POST", w.base_url + "/chat/completions", timeout=10,
                          json={"messages": [{"role": "user", "content": "a long enough answer"}], "stream": True}) as r:
            body = r.read().decode()
        assert r.status_code == 200 and "the model server closed the stream" in body
        assert sum(counts(live)) - sum(before) == 1
    finally:
        w.stop()
