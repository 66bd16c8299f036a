"""The driver (background tick + request gate) over an in-memory StatefulSet shared by several
wrapper replicas, on an injected clock: waking, sleeping, races, clock jumps, API errors."""

from __future__ import annotations

import asyncio

import pytest

from tests.scaling.fakes import FakeClock, FakeStatefulSet, ReplicaClock
from wrapper.errors import APIError
from wrapper.scaling.gate import Scaler, ScalerMetrics
from wrapper.scaling.kube import KubeError
from wrapper.scaling.policy import ANNOTATION, Policy, ScaleState, format_wall

IDLE = 40.0  # publish interval 10 s, tick 5 s


def replica(sts: FakeStatefulSet, clock: FakeClock, name: str, *, wall_offset: float = 0.0, wake_timeout: float = 5.0,
            probe=None, busy=None) -> Scaler:
    rc = ReplicaClock(clock, wall_offset)

    async def fake_sleep(seconds: float) -> None:
        clock.advance(seconds)
        await asyncio.sleep(0.001)

    return Scaler(sts.client(name), Policy(IDLE, rc), wake_timeout=wake_timeout, metrics=ScalerMetrics(),
                  probe=probe, busy=busy, clock=rc, sleep=fake_sleep)


async def run(scalers: list[Scaler], clock: FakeClock, seconds: float, *, step: float = 5.0,
              traffic: dict[int, float] | None = None) -> None:
    """Advance time in ticks; ``traffic`` = {replica index: seconds between requests}."""
    t = 0.0
    while t < seconds:
        for i, every in (traffic or {}).items():
            if int(t / every) != int((t - step) / every) or t == 0:
                await scalers[i].admit()
        for s in scalers:
            await s.tick()
        clock.advance(step)
        t += step


def scales(sts: FakeStatefulSet, n: int) -> list[str]:
    return [who for who, op, *rest in sts.calls if op == "scale" and rest == [n]]


def writes(sts: FakeStatefulSet, who: str | None = None) -> int:
    return sum(1 for w, op, *_ in sts.calls if op == "annotate" and who in (None, w))


async def test_activity_on_one_replica_keeps_the_gpu_up_for_all_then_one_scales_it_down() -> None:
    clock = FakeClock()
    sts = FakeStatefulSet(replicas=1)
    a, b, c = (replica(sts, clock, n) for n in "abc")
    # Only replica a gets requests, every 7 s, for 200 s (5x the idle timeout).
    await run([a, b, c], clock, 200, traffic={0: 7})
    assert sts.replicas == 1 and not scales(sts, 0)
    assert a.state == b.state == c.state == ScaleState.READY
    # Bounded write rate: at most one annotation write per interval (10 s) per replica.
    assert 200 / 10 - 2 <= writes(sts, "a") <= 200 / 10 + 1
    assert writes(sts, "b") == writes(sts, "c") == 0
    # Quiet: someone scales it to zero after the idle timeout (not before), exactly once.
    await run([a, b, c], clock, IDLE - 10)
    assert sts.replicas == 1
    await run([a, b, c], clock, 30)
    assert sts.replicas == 0 and len(scales(sts, 0)) == 1
    assert {s.state for s in (a, b, c)} == {ScaleState.SCALED_TO_ZERO}
    assert sum(s.metrics.scale_downs._value.get() for s in (a, b, c)) == 1


async def test_a_request_wakes_it_once_across_replicas_and_is_held_until_ready() -> None:
    clock = FakeClock()
    sts = FakeStatefulSet(replicas=0, annotation=format_wall(clock.wall() - 3600))
    sts.auto_ready = False
    a, b = replica(sts, clock, "a"), replica(sts, clock, "b")
    await run([a, b], clock, 5)
    assert a.state == ScaleState.SCALED_TO_ZERO
    held = [asyncio.ensure_future(s.admit()) for s in (a, b, a)]
    for _ in range(20):
        await asyncio.sleep(0.002)
    assert sts.replicas == 1 and len(scales(sts, 1)) == 1  # exactly one scale-up, idempotent
    assert not any(h.done() for h in held)  # held while loading
    assert a.state == ScaleState.WAKING and a.metrics.held._value.get() == 2
    # Fresh activity went into the annotation before the scale-up.
    first_write = next(i for i, (w, op, *_) in enumerate(sts.calls) if op == "annotate")
    first_scale = next(i for i, (w, op, *r) in enumerate(sts.calls) if op == "scale")
    assert first_write < first_scale
    sts.ready = 1  # the model finished loading
    await asyncio.wait_for(asyncio.gather(*held), 2)
    assert a.state == b.state == ScaleState.READY
    assert a.metrics.wakes._value.get() + b.metrics.wakes._value.get() == 1
    assert a.metrics.wake_duration._sum.get() > 0
    # While it loaded nobody scaled it down, even though the idle timeout passed.
    assert not scales(sts, 0)


async def test_past_the_wake_timeout_or_with_holding_disabled_answers_503_with_retry_after() -> None:
    clock = FakeClock()
    sts = FakeStatefulSet(replicas=0)
    sts.auto_ready = False
    slow = replica(sts, clock, "a", wake_timeout=0.05)
    with pytest.raises(APIError) as err:
        await slow.admit()
    assert err.value.status == 503 and err.value.headers["Retry-After"] == "10"
    assert "VLLM_WAKE_TIMEOUT" in err.value.message
    assert sts.replicas == 1  # the wake goes on for the next request
    sts2 = FakeStatefulSet(replicas=0)
    now = replica(sts2, clock, "b", wake_timeout=0)
    with pytest.raises(APIError) as err:
        await now.admit()
    assert err.value.status == 503 and err.value.headers["Retry-After"]
    await asyncio.sleep(0.01)
    assert scales(sts2, 1) == ["b"]  # holding disabled still wakes it
    await slow.stop()
    await now.stop()


async def test_fresh_activity_wins_the_race_against_a_scale_down() -> None:
    clock = FakeClock()
    sts = FakeStatefulSet(replicas=1)
    a, b = replica(sts, clock, "a"), replica(sts, clock, "b")
    await run([a, b], clock, 35)
    clock.advance(10)  # idle now, nobody has noticed yet
    # b has read the StatefulSet and decided it is idle; a request reaches a before b's PATCH.
    real_scale = b.api.scale

    async def scale_after_a_request(replicas, rv):
        await a.admit()  # a is READY and its write is due: it publishes on the request path
        return await real_scale(replicas, rv)

    b.api.scale = scale_after_a_request
    await b.tick()
    # Activity lives on the Lease, the replica count on the StatefulSet: b's scale-down went
    # through, then b re-read the Lease, saw a's fresher activity and woke vLLM straight back.
    assert writes(sts, "a") == 1 and scales(sts, 0) == ["b"]
    b.api.scale = real_scale
    await asyncio.wait_for(b._wake, 5)
    assert sts.replicas == 1 and scales(sts, 1) == ["b"]


async def test_a_request_right_after_another_replica_scaled_down_wakes_it() -> None:
    clock = FakeClock()
    sts = FakeStatefulSet(replicas=1)
    a, b = replica(sts, clock, "a"), replica(sts, clock, "b")
    await run([a, b], clock, 35)
    assert a.state == ScaleState.READY
    sts.replicas, sts.ready = 0, 0  # b (or a human) scaled to zero after a's last read
    sts.rv += 1
    await asyncio.wait_for(a.admit(), 2)  # the write on the request path reveals it: wake
    assert sts.replicas == 1 and scales(sts, 1) == ["a"]


async def test_in_flight_streams_count_as_activity() -> None:
    clock = FakeClock()
    sts = FakeStatefulSet(replicas=1)
    streams = [1]
    a = replica(sts, clock, "a", busy=lambda: streams[0] > 0)
    b = replica(sts, clock, "b")
    await run([a, b], clock, 200)  # one long stream on a, no new requests anywhere
    assert sts.replicas == 1
    streams[0] = 0
    await run([a, b], clock, 100)
    assert sts.replicas == 0


async def test_wall_clock_jumps_and_skewed_replicas_do_not_make_it_sleep_early_or_never() -> None:
    clock = FakeClock()
    sts = FakeStatefulSet(replicas=1)
    behind = replica(sts, clock, "behind", wall_offset=-7200)  # writes values 2 h "old"
    ahead = replica(sts, clock, "ahead", wall_offset=+7200)  # writes values 2 h in the future
    plain = replica(sts, clock, "plain")
    group = [behind, ahead, plain]
    await run(group, clock, 100, traffic={0: 5})  # only the slow-clock replica is busy
    assert sts.replicas == 1
    await run(group, clock, 100, traffic={1: 5})  # only the fast-clock replica is busy
    assert sts.replicas == 1
    clock.jump_wall(+86_400)  # every wall clock steps a day forward
    await run(group, clock, IDLE - 15, traffic={})
    assert sts.replicas == 1  # not idle yet: the jump did not age anything
    await run(group, clock, 60)
    assert sts.replicas == 0  # and the future-dated value did not keep it up forever


async def test_a_garbled_annotation_costs_at_most_one_idle_timeout() -> None:
    clock = FakeClock()
    sts = FakeStatefulSet(replicas=1, annotation="3000-01-01T00:00:00Z")
    a = replica(sts, clock, "a")
    await run([a], clock, IDLE + 10)
    assert sts.replicas == 0
    sts.replicas = sts.ready = 1
    sts.annotations[ANNOTATION] = "garbage!"
    await run([a], clock, IDLE - 10)
    assert sts.replicas == 1
    await run([a], clock, 20)
    assert sts.replicas == 0


async def test_api_errors_are_counted_and_never_crash_the_loop_or_leak(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING", logger="wrapper.scaling")
    clock = FakeClock()
    sts = FakeStatefulSet(replicas=1)
    healthy = [False]

    async def probe() -> bool:
        return healthy[0]

    a = replica(sts, clock, "a", probe=probe)
    forbidden = KubeError(403, "Forbidden", 'statefulsets.apps "vllm" is forbidden')
    sts.fail["read"] = forbidden
    await run([a], clock, 200)  # the loop survives; nothing scaled
    assert a.state == ScaleState.UNKNOWN and sts.replicas == 1
    assert a.metrics.api_errors.labels("read", "403")._value.get() == 40
    logged = [r for r in caplog.records if r.getMessage() == "kubernetes API call failed"]
    assert 1 <= len(logged) <= 4 and logged[0].status == 403  # logged, at a bounded rate
    with pytest.raises(APIError) as err:  # state unknown, vLLM not answering: 503, Retry-After
        await a.admit()
    assert err.value.status == 503 and err.value.headers["Retry-After"]
    healthy[0] = True
    await a.admit()  # vLLM answers its /health: serve even though the API is down
    del sts.fail["read"]
    sts.fail["scale"] = KubeError(0, "Unreachable", "ClientConnectorError")
    await run([a], clock, 200)  # it wants to scale down, the API is unreachable
    assert sts.replicas == 1 and a.metrics.api_errors.labels("scale_down", "0")._value.get() > 0
    sts.replicas, sts.ready = 0, 0
    healthy[0] = False
    await a.tick()
    with pytest.raises(APIError) as err:  # cannot wake: 503 at once, not after the wake timeout
        await asyncio.wait_for(a.admit(), 1)
    assert err.value.status == 503
    await a.stop()


async def test_time_at_zero_and_the_state_gauge_are_exported() -> None:
    clock = FakeClock()
    sts = FakeStatefulSet(replicas=0)
    a = replica(sts, clock, "a")
    await run([a], clock, 100)
    assert a.metrics.scaled_to_zero._value.get() == pytest.approx(95)
    assert a.metrics.state.labels("scaled_to_zero")._value.get() == 1
    assert a.metrics.state.labels("ready")._value.get() == 0
    await a.admit()
    assert a.metrics.state.labels("ready")._value.get() == 1
    assert a.metrics.scaled_to_zero._value.get() == pytest.approx(100)


async def test_the_background_loop_starts_and_stops_cleanly() -> None:
    clock = FakeClock()
    sts = FakeStatefulSet(replicas=1)
    a = replica(sts, clock, "a")
    await a.start()
    for _ in range(50):
        await asyncio.sleep(0.002)
    await a.stop()
    n = len(sts.calls)
    assert n > 3 and scales(sts, 0) == ["a"]  # the fake sleep runs the clock fast: it slept
    await asyncio.sleep(0.02)
    assert len(sts.calls) == n


async def test_activity_is_shared_even_over_a_garbled_annotation() -> None:
    clock = FakeClock()
    sts = FakeStatefulSet(replicas=1, annotation="garbage!")
    a, b = replica(sts, clock, "a"), replica(sts, clock, "b")
    await run([a, b], clock, 200, traffic={0: 7})  # busy on a only
    assert sts.replicas == 1 and not scales(sts, 0)
    assert sts.annotations[ANNOTATION] != "garbage!"  # a's real activity replaced it
    await run([a, b], clock, IDLE + 20)
    assert sts.replicas == 0


async def test_a_bug_in_the_wake_path_is_a_503_not_a_crash() -> None:
    clock = FakeClock()
    sts = FakeStatefulSet(replicas=0)
    a = replica(sts, clock, "a")
    sts.fail["scale"] = RuntimeError("boom")  # not an API error: a bug
    with pytest.raises(APIError) as err:
        await asyncio.wait_for(a.admit(), 2)
    assert err.value.status == 503 and err.value.headers["Retry-After"]
    del sts.fail["scale"]
    await asyncio.wait_for(a.admit(), 2)  # and the next request wakes it normally
    assert sts.replicas == 1


async def test_a_model_load_longer_than_the_idle_timeout_is_never_cut_short() -> None:
    """Issue 12, day 1 point 4: the first `pulumi up` starts vLLM; its model download takes longer
    than idleTimeout. No wrapper replica may scale it to zero before it has been ready once."""
    clock = FakeClock()
    sts = FakeStatefulSet(replicas=1, ready=0)
    a, b = (replica(sts, clock, n) for n in "ab")
    await run([a, b], clock, IDLE * 5)
    assert sts.replicas == 1 and not scales(sts, 0)
    assert a.state == b.state == ScaleState.WAKING
    sts.ready = 1  # the model finished loading
    await run([a, b], clock, IDLE - 10)
    assert sts.replicas == 1  # one idle timeout from "ready", not from "started"
    await run([a, b], clock, 20)
    assert sts.replicas == 0 and len(scales(sts, 0)) == 1
