"""When to wake vLLM and when to let it sleep: pure decisions, no I/O, an injected clock.

Shared state lives in ONE annotation on the activity Lease (``<statefulset>-activity``, a
``coordination.k8s.io/v1`` Lease beside the vLLM StatefulSet), written by every wrapper replica:

    vllm-deploy/last-activity: "2026-11-23T12:55:17.123Z"   (RFC 3339, UTC, milliseconds)

It is the wall-clock time of the latest request that reached the model, as far as the writer
knows. Wall clock appears only there. Every duration this module measures is monotonic: when a
replica first sees a new annotation value it converts it once to its own monotonic time
("derived activity") and never looks at the wall clock for that value again, so a clock jump on
this replica changes nothing afterwards. Values it cannot trust are bounded instead of believed:

* garbled, missing or in the future (beyond ``skew``): counted as activity *now*, at the moment
  this replica first saw the value — so it keeps the GPU up for at most one more idle timeout,
  never forever; the next real request overwrites it;
* far in the past (a writer whose clock is behind): a value that appeared after this replica
  last saw the previous one was written after that moment, so its activity is no older than that
  moment minus the publishing lag (``lag``).

A wrapper replica's own activity is published at most once per ``publish_interval`` (default
``min(60 s, idle_timeout / 4)``), only when it is newer than what the annotation already says;
so the annotation trails real activity by at most one interval plus one tick, far below the idle
timeout, and any replica may decide that the whole service is idle.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Protocol

ANNOTATION = "vllm-deploy/last-activity"


class Clock(Protocol):
    def monotonic(self) -> float: ...
    def wall(self) -> float: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()


class ScaleState(StrEnum):
    UNKNOWN = "unknown"  # the StatefulSet has not been read yet (or never could be)
    SCALED_TO_ZERO = "scaled_to_zero"
    WAKING = "waking"  # replicas >= 1, none ready yet (scheduling, pulling, loading the model)
    READY = "ready"


@dataclass(frozen=True, slots=True)
class Observation:
    """What the StatefulSet says (one GET or PATCH reply)."""

    replicas: int  # spec.replicas
    ready_replicas: int  # status.readyReplicas (absent = 0)
    activity: str | None  # the raw annotation value (on the activity Lease)
    resource_version: str  # the StatefulSet's: the precondition of a /scale patch
    activity_version: str = ""  # the activity Lease's: the precondition of an activity write
    drain: str | None = None  # the drain mark on the Lease (autoscale: ordinals >= it take no new requests)

    @property
    def state(self) -> ScaleState:
        if self.replicas <= 0:
            return ScaleState.SCALED_TO_ZERO
        return ScaleState.READY if self.ready_replicas >= 1 else ScaleState.WAKING


def format_wall(t: float) -> str:
    """Seconds since the epoch → ``2026-11-23T12:55:17.123Z``."""
    ms = round(t * 1000)
    d = datetime.fromtimestamp(ms // 1000, UTC)
    return d.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"


def parse_wall(value: str | None) -> float | None:
    """The inverse of :func:`format_wall` (any RFC 3339 UTC form); None if not a sane time."""
    if not value or not isinstance(value, str) or len(value) > 64:
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        d = datetime.fromisoformat(text)
    except ValueError:
        return None
    if d.tzinfo is None:
        return None
    t = d.timestamp()
    return t if math.isfinite(t) and t > 0 else None


class Policy:
    """One wrapper replica's view: its own activity plus the shared annotation.

    The driver calls :meth:`record_activity` for every request that reaches the model,
    :meth:`observe` with every StatefulSet it reads, and asks :meth:`publish_value` /
    :meth:`should_scale_down` / :meth:`needs_wake`.
    """

    def __init__(
        self,
        idle_timeout: float,
        clock: Clock | None = None,
        *,
        publish_interval: float | None = None,
        tick: float | None = None,
        skew: float = 5.0,
    ) -> None:
        if not idle_timeout > 0:
            raise ValueError("idle_timeout must be > 0")
        self.idle = float(idle_timeout)
        self.clock = clock or SystemClock()
        self.interval = publish_interval if publish_interval is not None else min(60.0, self.idle / 4)
        self.tick = tick if tick is not None else default_tick(self.idle)
        # How far the annotation may trail a replica's real activity.
        self.lag = self.interval + self.tick
        self.skew = skew
        now = self.clock.monotonic()
        self.own: float | None = None  # monotonic time of this replica's last activity
        self._own_published: float | None = None  # own activity included in the last successful write
        self._last_write: float | None = None  # monotonic time of the last write attempt
        # Start counts as activity: a new replica never scales down sooner than one idle
        # timeout after it started (it cannot know what happened before).
        self.started = now
        self.shared = -math.inf  # activity derived from the annotation (monotonic), for idleness
        # What the annotation provably says (trusted values only): what publishing compares with.
        # A garbled or future value must not stop replicas from writing real activity over it.
        self.in_annotation = -math.inf
        self._seen: str | object | None = _NOTHING
        self._confirmed_at = now  # last time this replica read the annotation unchanged
        # When vLLM last became ready, as this replica saw it. A first start (or a restart) may
        # spend longer than the idle timeout downloading and loading the model: that is not
        # idleness, so the idle clock starts again when the model becomes ready.
        self.ready_at = -math.inf
        self.state = ScaleState.UNKNOWN

    # -- inputs ------------------------------------------------------------------------------
    def record_activity(self) -> None:
        self.own = self.clock.monotonic()

    def observe(self, obs: Observation) -> ScaleState:
        now = self.clock.monotonic()
        if obs.activity != self._seen:
            age = self._age(obs.activity)
            if age is not None:
                self.in_annotation = max(self.in_annotation, now - age)
            derived = now - (age or 0.0)
            # It was written after we last saw the previous value: bound a writer's slow clock.
            derived = max(derived, self._confirmed_at - self.lag)
            self.shared = max(self.shared, min(derived, now))
            self._seen = obs.activity
        self._confirmed_at = now
        # A replica that first sees vLLM already ready is covered by its own start time.
        if obs.state == ScaleState.READY and self.state in (ScaleState.WAKING, ScaleState.SCALED_TO_ZERO):
            self.ready_at = now
        self.state = obs.state
        return self.state

    def _age(self, value: str | None) -> float | None:
        """Seconds since ``value``, by this replica's wall clock; None when it cannot be trusted."""
        t = parse_wall(value)
        if t is None:
            return None
        age = self.clock.wall() - t
        if age < -self.skew:  # from the future: a bad clock or a hand edit
            return None
        return max(age, 0.0)

    # -- decisions ---------------------------------------------------------------------------
    @property
    def last_activity(self) -> float:
        """Monotonic time of the latest activity this replica knows of (own or shared)."""
        last = max(self.started, self.shared, self.ready_at)
        return last if self.own is None else max(self.own, last)

    def idle_for(self) -> float:
        return self.clock.monotonic() - self.last_activity

    def should_scale_down(self, obs: Observation) -> bool:
        """Scale to zero: vLLM is up and ready, and nobody (this replica or any other) was active
        for the idle timeout since it became ready. Never while it has not yet become ready since
        it was (re)started: killing a model download half-way would only make the next one longer."""
        return obs.replicas > 0 and obs.ready_replicas >= 1 and self.idle_for() >= self.idle

    @staticmethod
    def needs_wake(obs: Observation) -> bool:
        return obs.replicas <= 0

    def publish_due(self) -> bool:
        """Own activity not yet in the annotation, and the write rate allows a write now."""
        if self.value_to_publish() is None:
            return False
        return self._last_write is None or self.clock.monotonic() - self._last_write >= self.interval

    def value_to_publish(self) -> tuple[str, float] | None:
        """``(annotation value, own activity it stands for)``, or None when nothing is newer."""
        own = self.own
        if own is None:
            return None
        if self._own_published is not None and own <= self._own_published:
            return None
        if own <= self.in_annotation:  # someone already published activity at least this recent
            return None
        now = self.clock.monotonic()
        return format_wall(self.clock.wall() - (now - own)), own

    def write_attempted(self) -> None:
        self._last_write = self.clock.monotonic()

    def published(self, own: float) -> None:
        self._own_published = own


_NOTHING = object()


def default_tick(idle_timeout: float) -> float:
    """How often the background loop reads the StatefulSet: often enough to stay well inside
    the publishing interval, never more than every 10 s."""
    return max(0.05, min(10.0, min(60.0, idle_timeout / 4) / 2))


__all__ = [
    "ANNOTATION",
    "Clock",
    "Observation",
    "Policy",
    "ScaleState",
    "SystemClock",
    "default_tick",
    "format_wall",
    "parse_wall",
]
