"""The autoscaler's decisions with an injected clock: what it does, and when, for a given signal.

The signal is running + waiting summed over the ready replicas (vLLM's own /metrics); the
policy turns it into an action, or none. One tick = one call of ``decide``.
"""

from __future__ import annotations

import pytest

from tests.scaling.fakes import FakeClock
from wrapper.scaling.autoscale_policy import Action, AutoscalePolicy, Kind, Sample, routable

TICK = 1.0


def policy(clock: FakeClock, minimum: int = 1, maximum: int = 4, **kw: float) -> AutoscalePolicy:
    """Target 4 in flight per replica, a 10 s window, a 30 s scale-down delay."""
    opts = {"window": 10.0, "scale_down_delay": 30.0, "drain_grace": 3.0, "drain_timeout": 20.0, **kw}
    return AutoscalePolicy(minimum, maximum, 4.0, clock=clock, **opts)


def run(p: AutoscalePolicy, clock: FakeClock, seconds: float, sample) -> list[tuple[float, Action]]:
    """Tick for ``seconds``; ``sample(t)`` gives the Sample at t seconds into the run."""
    out = []
    t = 0.0
    while t < seconds:
        a = p.decide(sample(t))
        if a is not None:
            out.append((t, a))
        clock.advance(TICK)
        t += TICK
    return out


def steady(replicas: int, demand: float, ready: int | None = None, **kw) -> Sample:
    return Sample(replicas, replicas if ready is None else ready, demand, **kw)


def test_a_load_step_scales_up_once_the_window_has_passed_and_no_later_than_15_s() -> None:
    clock = FakeClock()
    p = policy(clock)
    actions = run(p, clock, 30, lambda t: steady(1, 0.0 if t < 5 else 11.0))  # 11 in flight, target 4: 3 replicas
    (t, a), *_ = actions
    assert a.kind is Kind.UP and a.to == 3
    assert 5 + 10 <= t <= 5 + 15  # the window, then at most a tick: decided <= 15 s after the step
    assert "11.00 in flight per ready replica (target 4, 1/1 ready)" in a.reason
    assert p.desired == 3


def test_scale_up_never_exceeds_max_and_goes_to_the_sustained_level_not_the_peak() -> None:
    clock = FakeClock()
    p = policy(clock)
    ((_, a),) = run(p, clock, 11, lambda t: steady(1, 1000.0))[:1]
    assert a == Action(Kind.UP, 4, a.reason)  # 250 replicas wanted, max is 4
    clock2 = FakeClock()
    p2 = policy(clock2)
    # mostly 9 (3 replicas), one sample of 15 (4) inside the window: the sustained level is 3
    (_, b), *_ = run(p2, clock2, 12, lambda t: steady(1, 15.0 if t == 3 else 9.0))
    assert b.kind is Kind.UP and b.to == 3


def test_spikes_shorter_than_the_window_never_scale() -> None:
    clock = FakeClock()
    p = policy(clock)
    # 8 s of 40 requests in flight, then quiet for 4 s; repeated: never 10 s in a row
    actions = run(p, clock, 120, lambda t: steady(1, 40.0 if t % 12 < 8 else 0.0))
    assert actions == []


def test_flapping_load_around_the_target_moves_nothing_and_a_scale_up_is_held_for_the_delay() -> None:
    clock = FakeClock()
    p = policy(clock)
    # above and below the target of 2 replicas every 3 s: neither window nor delay is ever full
    assert run(p, clock, 120, lambda t: steady(2, 9.0 if (t // 3) % 2 else 3.0)) == []
    # after a scale-up, quiet load waits the scale-down delay from the event, not from the dip
    clock = FakeClock()
    p = policy(clock)
    ((_, up),) = run(p, clock, 11, lambda t: steady(1, 8.0))
    p.applied(up, 1)
    actions = run(p, clock, 60, lambda t: steady(2, 0.0))
    t_drain, drain = actions[0]
    assert drain.kind is Kind.DRAIN and drain.to == 1
    assert t_drain >= 30.0


def test_a_scale_down_drains_one_replica_then_removes_it_and_never_goes_below_min() -> None:
    clock = FakeClock()
    p = policy(clock, minimum=2, maximum=4)
    state = {"replicas": 4, "mark": None}

    def now(t: float) -> Sample:
        draining = state["mark"] is not None and state["mark"] < state["replicas"]
        return Sample(state["replicas"], state["replicas"], 0.0, state["mark"], 0.0 if draining else None)

    log = []
    for _ in range(400):
        a = p.decide(now(0))
        if a is not None:
            log.append((clock.mono, a.kind, a.to))
            if a.kind is Kind.DRAIN:
                state["mark"] = a.to
            elif a.kind is Kind.DOWN:
                state["replicas"] = a.to
            elif a.kind is Kind.CLEAR:
                state["mark"] = None
            p.applied(a, state["replicas"])
        clock.advance(TICK)
    kinds = [(k, to) for _, k, to in log]
    assert kinds == [(Kind.DRAIN, 3), (Kind.DOWN, 3), (Kind.CLEAR, 3), (Kind.DRAIN, 2), (Kind.DOWN, 2), (Kind.CLEAR, 2)]
    (t_drain, _, _), (t_down, _, _) = log[0], log[1]
    assert t_down - t_drain >= 3.0  # every wrapper replica had the grace to stop routing there
    assert log[3][0] - t_down >= 30.0  # the next replica waits a full delay again
    assert state["replicas"] == 2  # min


def test_a_drain_waits_for_the_replica_to_empty_or_for_the_drain_timeout() -> None:
    clock = FakeClock()
    p = policy(clock)
    busy = Sample(2, 2, 1.0, drain_from=1, draining_load=1.0)  # one long request still running there
    actions = run(p, clock, 40, lambda t: busy)
    (t, down), *_ = actions
    assert down.kind is Kind.DOWN and down.to == 1 and "drain timeout 20 s" in down.reason
    assert t >= 3.0 + 20.0
    clock = FakeClock()
    p = policy(clock)
    actions = run(p, clock, 40, lambda t: Sample(2, 2, 1.0, drain_from=1, draining_load=1.0 if t < 6 else 0.0))
    (t, down), *_ = actions
    assert down.kind is Kind.DOWN and t == 6.0 and down.reason.startswith("drained")


def test_demand_that_comes_back_while_draining_cancels_the_drain_at_once() -> None:
    clock = FakeClock()
    p = policy(clock)
    p.decide(Sample(2, 2, 0.0, drain_from=1, draining_load=0.5))
    clock.advance(1)
    a = p.decide(Sample(2, 2, 7.0, drain_from=1, draining_load=3.0))  # 2 replicas' worth
    assert a is not None and a.kind is Kind.UNDRAIN and "demand came back" in a.reason


def test_a_replica_that_never_becomes_ready_asks_for_nothing_more_and_is_removed_when_quiet() -> None:
    clock = FakeClock()
    p = policy(clock)
    ((_, up),) = run(p, clock, 11, lambda t: steady(1, 8.0))
    p.applied(up, 1)
    assert up.to == 2
    # replica 1 never answers: demand stays 8 on the one ready replica; desired 2 == spec, no more
    assert run(p, clock, 120, lambda t: Sample(2, 1, 8.0)) == []
    assert p.desired == 2 and p.per_replica == 8.0
    # the load ends: after the delay the not-ready replica (the highest ordinal) is drained away
    actions = run(p, clock, 40, lambda t: Sample(2, 1, 0.0))
    assert [a.kind for _, a in actions][:1] == [Kind.DRAIN]


def test_no_signal_no_opinion_and_zero_is_left_to_the_idle_timeout() -> None:
    clock = FakeClock()
    p = policy(clock, minimum=0, maximum=3)
    assert run(p, clock, 400, lambda t: Sample(2, 0, None)) == []  # nobody answered /metrics
    assert run(p, clock, 400, lambda t: Sample(0, 0, None)) == []  # asleep: a request wakes it
    actions = run(p, clock, 400, lambda t: Sample(1, 1, 0.0))  # min 0 still keeps one while up
    assert actions == []


def test_a_stale_mark_is_cleared_and_routing_skips_drained_and_missing_ordinals() -> None:
    clock = FakeClock()
    p = policy(clock)
    a = p.decide(Sample(2, 2, 4.0, drain_from=2))
    assert a is not None and a.kind is Kind.CLEAR
    assert routable(3, None) == 3 and routable(3, 2) == 2 and routable(1, 2) == 1 and routable(0, None) == 0


@pytest.mark.parametrize("bad", [dict(minimum=3, maximum=2), dict(maximum=0)])
def test_bounds_are_checked(bad) -> None:
    with pytest.raises(ValueError):
        AutoscalePolicy(bad.get("minimum", 1), bad["maximum"], 4.0)
