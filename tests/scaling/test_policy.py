"""The decision logic alone (no I/O): an injected clock, observations fed by hand."""

from __future__ import annotations

import pytest

from tests.scaling.fakes import FakeClock
from wrapper.scaling.policy import Observation, Policy, ScaleState, default_tick, format_wall, parse_wall

IDLE = 100.0


def obs(value: str | None, replicas: int = 1, ready: int = 1, rv: str = "1") -> Observation:
    return Observation(replicas, ready, value, rv)


def stamp(clock: FakeClock, ago: float = 0.0) -> str:
    return format_wall(clock.wall() - ago)


def test_annotation_format_round_trips_and_rejects_garbage() -> None:
    assert format_wall(1_800_000_000.1234) == "2027-01-15T08:00:00.123Z"
    assert parse_wall("2027-01-15T08:00:00.123Z") == pytest.approx(1_800_000_000.123)
    assert parse_wall("2027-01-15T09:00:00+01:00") == 1_800_000_000.0
    for bad in (None, "", "yesterday", "2027-01-15T08:00:00", "9" * 80, "0001-01-01T00:00:00Z"[:0]):
        assert parse_wall(bad) is None


def test_states_follow_replicas_and_ready_replicas() -> None:
    assert obs(None, replicas=0, ready=1).state == ScaleState.SCALED_TO_ZERO
    assert obs(None, replicas=1, ready=0).state == ScaleState.WAKING
    assert obs(None, replicas=1, ready=1).state == ScaleState.READY
    assert Policy(IDLE, FakeClock()).state == ScaleState.UNKNOWN


def test_rates_derive_from_the_idle_timeout() -> None:
    assert Policy(900, FakeClock()).interval == 60.0
    assert Policy(100, FakeClock()).interval == 25.0
    assert default_tick(900) == 10.0 and default_tick(4) == 0.5
    with pytest.raises(ValueError):
        Policy(0, FakeClock())


def test_sleeps_after_the_idle_timeout_and_not_before() -> None:
    c = FakeClock()
    p = Policy(IDLE, c)
    p.observe(obs(stamp(c, ago=10_000)))  # an ancient annotation: start still counts as activity
    c.advance(IDLE - 1)
    assert not p.should_scale_down(obs(None))
    c.advance(1)
    p.observe(obs(stamp(c, ago=10_000)))
    assert p.should_scale_down(p_obs := obs(stamp(c, ago=10_000)))
    assert not p.should_scale_down(obs(p_obs.activity, replicas=0))  # already at zero
    assert p.needs_wake(obs(None, replicas=0)) and not p.needs_wake(p_obs)


def test_own_activity_and_shared_activity_both_keep_it_up() -> None:
    c = FakeClock()
    p = Policy(IDLE, c)
    c.advance(90)
    p.record_activity()
    c.advance(90)
    assert not p.should_scale_down(obs(None))  # 90 s since own activity
    c.advance(10)
    assert p.should_scale_down(obs(None))
    # Another replica published activity 5 s ago: not idle any more.
    p.observe(obs(stamp(c, ago=5)))
    assert p.idle_for() == pytest.approx(5)
    assert not p.should_scale_down(obs(None))


def test_publishes_at_a_bounded_rate_and_only_what_is_new() -> None:
    c = FakeClock()
    p = Policy(IDLE, c)  # interval 25 s
    assert not p.publish_due()  # no activity, nothing to say
    p.record_activity()
    assert p.publish_due()
    value, own = p.value_to_publish()
    assert parse_wall(value) == pytest.approx(c.wall(), abs=0.001)
    p.write_attempted()
    p.published(own)
    p.observe(obs(value))
    writes = 1
    for _ in range(100):  # busy for 100 s, a request every second
        c.advance(1)
        p.record_activity()
        if p.publish_due():
            value, own = p.value_to_publish()
            p.write_attempted()
            p.published(own)
            p.observe(obs(value))
            writes += 1
    assert writes == 1 + 100 // 25
    c.advance(1000)  # quiet: nothing new to publish, ever
    assert not p.publish_due()


def test_does_not_overwrite_newer_activity_from_another_replica() -> None:
    c = FakeClock()
    p = Policy(IDLE, c)
    p.record_activity()
    c.advance(3)
    p.observe(obs(stamp(c)))  # someone published "now", newer than our activity
    assert p.value_to_publish() is None and not p.publish_due()


def test_wall_clock_jumps_after_observing_change_nothing() -> None:
    c = FakeClock()
    p = Policy(IDLE, c)
    c.advance(200)
    value = stamp(c, ago=10)
    p.observe(obs(value))
    c.jump_wall(+86_400)  # NTP steps a day forward: the same value now "looks" a day old
    p.observe(obs(value))
    assert p.idle_for() == pytest.approx(10)
    assert not p.should_scale_down(obs(value))
    c.jump_wall(-2 * 86_400)  # and two days back: it must still go to sleep on time
    c.advance(IDLE - 10)
    p.observe(obs(value))
    assert p.should_scale_down(obs(value))


def test_a_future_or_garbled_annotation_keeps_it_up_one_idle_timeout_not_forever() -> None:
    for value in ("2999-01-01T00:00:00.000Z", "not a time", "", None):
        c = FakeClock()
        p = Policy(IDLE, c)
        c.advance(500)
        p.observe(obs("2020-01-01T00:00:00.000Z"))
        assert p.should_scale_down(obs(None))
        p.observe(obs(value))  # appears now: counted as activity at first sight
        assert not p.should_scale_down(obs(value))
        c.advance(IDLE)
        p.observe(obs(value))  # unchanged value: no new activity
        assert p.should_scale_down(obs(value)), value


def test_a_writer_with_a_slow_clock_cannot_make_it_sleep_early() -> None:
    c = FakeClock()
    p = Policy(IDLE, c, publish_interval=20, tick=5)  # lag 25 s
    c.advance(1000)
    p.observe(obs("2020-01-01T00:00:00.000Z"))
    c.advance(5)
    # A replica whose clock is 2 h behind publishes: the value appeared within the last tick.
    p.observe(obs(stamp(c, ago=7200)))
    assert p.idle_for() <= 5 + 25
    assert not p.should_scale_down(obs(None))


def test_small_forward_skew_counts_as_now() -> None:
    c = FakeClock()
    p = Policy(IDLE, c)
    c.advance(1000)
    p.observe(obs(stamp(c, ago=-3)))  # 3 s in the future: within skew
    assert p.idle_for() == pytest.approx(0)


def test_real_activity_is_published_over_a_garbled_or_missing_value() -> None:
    for value in (None, "garbage", "2999-01-01T00:00:00Z"):
        c = FakeClock()
        p = Policy(IDLE, c)
        c.advance(1)
        p.record_activity()
        p.observe(obs(value))  # seen after our activity: idleness counts it, publishing does not
        assert p.publish_due(), value
        assert parse_wall(p.value_to_publish()[0]) == pytest.approx(c.wall(), abs=0.001)


def test_a_first_load_longer_than_the_idle_timeout_is_not_idleness() -> None:
    """vLLM started (by `pulumi up`, a wake, or a crash-restart) and still downloading/loading its
    model: replicas 1, ready 0. However long that takes, it is never scaled down half-way; the
    idle clock starts when it becomes ready."""
    c = FakeClock()
    p = Policy(IDLE, c)
    loading = obs(stamp(c, ago=10_000), replicas=1, ready=0)
    for _ in range(5):  # five idle timeouts of loading, nobody sending requests
        p.observe(loading)
        assert not p.should_scale_down(loading)
        c.advance(IDLE)
    ready = obs(loading.activity, replicas=1, ready=1)
    p.observe(ready)
    c.advance(IDLE - 1)
    p.observe(ready)
    assert not p.should_scale_down(ready)  # a user gets one idle timeout to use the loaded model
    c.advance(1)
    p.observe(ready)
    assert p.should_scale_down(ready)


def test_a_restart_after_being_ready_is_a_new_load() -> None:
    c = FakeClock()
    p = Policy(IDLE, c)
    p.observe(obs(None))
    c.advance(IDLE * 3)
    crashed = obs(None, replicas=1, ready=0)  # the pod restarted: loading again
    p.observe(crashed)
    assert not p.should_scale_down(crashed)
    c.advance(IDLE * 3)
    p.observe(obs(None))
    assert not p.should_scale_down(obs(None))
