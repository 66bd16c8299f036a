"""Two wrapper replicas' autoscalers against one StatefulSet on the loopback fake API server (it
answers like the API server: resourceVersion preconditions, 409 Conflict, merge patches), each
scraping the same vLLM replicas' ``/metrics`` over HTTP. The clock that decides is injected; the
HTTP calls are real."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from tests.autoscale.metrics_replica import MetricsReplica
from tests.scaling.fake_apiserver import FakeAPIServer
from tests.scaling.fakes import FakeClock
from wrapper.routing.backends import Backend, Pool, name_of
from wrapper.routing.policy import make_policy
from wrapper.routing.router import Router
from wrapper.scaling.autoscale import Autoscaler, parse_load
from wrapper.scaling.autoscale_policy import DRAIN_ANNOTATION, AutoscalePolicy, Kind
from wrapper.scaling.kube import StatefulSetClient
from wrapper.scaling.policy import ANNOTATION

NS, NAME = "vllm-dev", "vllm"


def scale_patches(server: FakeAPIServer) -> list:
    return [r for r in server.requests if r.method == "PATCH" and r.path.endswith("/scale")]


def events(*scalers: Autoscaler, kind: Kind) -> float:
    total = 0.0
    for s in scalers:
        total += s.metrics.registry.get_sample_value("vllm_wrapper_autoscale_events_total", {"kind": kind.value}) or 0
    return total


@asynccontextmanager
async def cluster() -> AsyncIterator[tuple[FakeAPIServer, list[MetricsReplica], FakeClock, list[Autoscaler]]]:
    server = FakeAPIServer(NS, NAME, replicas=1, ready=1).start()
    replicas = [MetricsReplica() for _ in range(3)]
    clock = FakeClock()
    scalers = []
    for _ in range(2):  # two wrapper replicas
        bases = [r.base_url for r in replicas]
        router = Router(Pool([Backend(name_of(b), b) for b in bases]), make_policy("least-load"))
        policy = AutoscalePolicy(
            1, 3, 4.0, window=2.0, scale_down_delay=5.0, drain_grace=1.0, drain_timeout=30.0, clock=clock
        )
        api = StatefulSetClient(NS, NAME, ANNOTATION, api_url=server.url)
        scalers.append(Autoscaler(api, policy, router, bases, tick=0.5))
    try:
        yield server, replicas, clock, scalers
    finally:
        for s in scalers:
            await s.stop()
        for r in replicas:
            await r.stop()
        server.stop()


def test_the_load_is_read_from_vllms_exposition_format() -> None:
    page = (
        "# TYPE vllm:num_requests_running gauge\n"
        'vllm:num_requests_running{engine="0",model_name="tiny"} 2.0\n'
        'vllm:num_requests_running{engine="1",model_name="tiny"} 1.0\n'
        'vllm:num_requests_waiting{engine="0",model_name="tiny"} 4.0 1700000000000\n'
        'vllm:num_requests_waiting_by_reason{engine="0",reason="capacity"} 9.0\n'
        "vllm:num_requests_swapped 7.0\n"
    )
    assert parse_load(page) == 7.0
    with pytest.raises(ValueError):
        parse_load("process_cpu_seconds_total 3.0\n")


async def test_two_wrapper_replicas_deciding_at_once_scale_once_drain_once_and_never_fight() -> None:
    async with cluster() as (server, reps, clock, (a, b)):
        await two_replicas_scale_up_and_down(server, reps, clock, a, b)


async def two_replicas_scale_up_and_down(
    server: FakeAPIServer, reps: list[MetricsReplica], clock: FakeClock, a: Autoscaler, b: Autoscaler
) -> None:
    await reps[0].start()  # only pod 0 exists
    reps[0].running, reps[0].waiting = 6, 3  # 9 in flight, target 4: 3 replicas

    # 1. Sustained demand: both decide "up to 3" from the same signal; one write lands.
    assert await asyncio.gather(a.tick(), b.tick()) == [None, None]  # the window starts
    clock.advance(2.0)
    acts = await asyncio.gather(a.tick(), b.tick())
    assert {x.kind for x in acts if x is not None} == {Kind.UP} and {x.to for x in acts if x} == {3}
    assert server.replicas == 3
    ups = scale_patches(server)
    assert [p.body["spec"] for p in ups] == [{"replicas": 3}] * len(ups)
    assert all("resourceVersion" in p.body["metadata"] for p in ups)  # compare-and-swap
    assert sorted(p.status for p in ups) in ([200], [200, 409])  # the second writer's 409, or it saw 3
    assert events(a, b, kind=Kind.UP) == 1
    assert a.report()["events"] or b.report()["events"]

    # 2. Pods 1 and 2 are requested but not up: held back from routing until they serve.
    await a.tick()
    assert a.router.held_back == {name_of(reps[1].base_url), name_of(reps[2].base_url)}
    await reps[1].start()
    await a.tick()
    assert a.router.held_back == {name_of(reps[2].base_url)}
    picked = {a.router.pick(None).name for _ in range(10)}
    assert picked == {name_of(reps[0].base_url), name_of(reps[1].base_url)}
    health = a.report()
    assert (health["replicas"], health["desired"], health["ready"]) == (3, 3, 2)

    # 3. Load ends (one long request still on pod 2): after the delay, ONE drain mark, both
    #    routers hold pod 2 back, and /scale waits until pod 2 has nothing left.
    await reps[2].start()
    for r in reps:
        r.running = r.waiting = 0
    reps[2].running = 1
    for _ in range(8):
        clock.advance(1.0)
        await asyncio.gather(a.tick(), b.tick())
        if server.annotations.get(DRAIN_ANNOTATION):
            break
    assert server.annotations[DRAIN_ANNOTATION] == "2"
    await asyncio.gather(a.tick(), b.tick())
    assert a.router.held_back == b.router.held_back == {name_of(reps[2].base_url)}
    for _ in range(4):  # past the grace, but the request is still running: no scale-down
        clock.advance(1.0)
        await asyncio.gather(a.tick(), b.tick())
    assert server.replicas == 3
    reps[2].running = 0
    server.conflict_next = 1  # someone else writes the StatefulSet first: a 409, re-read, retried
    clock.advance(1.0)
    await asyncio.gather(a.tick(), b.tick())
    assert server.replicas == 2
    downs = [p for p in scale_patches(server) if p.body["spec"] == {"replicas": 2}]
    assert 409 in [p.status for p in downs] and [p.status for p in downs].count(200) == 1
    assert events(a, b, kind=Kind.DRAIN) == 1 and events(a, b, kind=Kind.DOWN) == 1
    # The mark has done its job: removed, so a later scale-up starts with nothing held back.
    await asyncio.gather(a.tick(), b.tick())
    assert DRAIN_ANNOTATION not in server.annotations
    assert server.annotations["vllm-deploy/purpose"] == "activity"  # a merge patch: the rest stays
    assert a.router.held_back == {name_of(reps[2].base_url)}  # ordinal 2 is beyond spec.replicas now


async def test_the_floor_holds_and_a_scale_to_zero_is_left_alone() -> None:
    async with cluster() as (server, reps, clock, (a, _)):
        await floor_holds(server, reps, clock, a)


async def floor_holds(server: FakeAPIServer, reps: list[MetricsReplica], clock: FakeClock, a: Autoscaler) -> None:
    await reps[0].start()
    for _ in range(30):
        clock.advance(1.0)
        await a.tick()
    assert server.replicas == 1 and not scale_patches(server)  # min 1: nothing to remove
    with server.lock:
        server.objects[(NS, NAME)]["spec"]["replicas"] = 0  # the idle timeout took it to zero
    for _ in range(5):
        clock.advance(1.0)
        assert await a.tick() is None
    assert not scale_patches(server)
