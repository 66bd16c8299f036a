"""How many vLLM replicas between ``min`` and ``max``: pure decisions, no I/O, an injected clock.

The signal is vLLM's own load, read from every ready replica's ``/metrics``
(``vllm:num_requests_running + vllm:num_requests_waiting``, or the mean in flight since the
last scrape when larger: ``autoscale.BusyTime``): global, so every wrapper replica that
reads it computes the same figure and the same decision, without talking to the others. Why not the
wrapper's own in-flight count: each wrapper replica sees only its share, and the sum is what vLLM
is actually asked to do (KEDA setups of production-stack and llm-d use ``num_requests_waiting`` for
the same reason; running + waiting also scales before a queue forms, while the batch fills).

* desired = ``ceil(demand / target)`` within ``[min, max]``; ``demand`` sums the ready replicas only
  (a replica that is still loading, or never becomes ready, adds no capacity and no demand, so the
  figure never runs away: a scale-up that did not help does not ask for more unless demand grows).
* **up**: when desired stays above ``spec.replicas`` for ``window`` seconds (every sample, so a
  spike shorter than the window never scales), to the lowest desired seen over that window (the
  sustained level, not the spike's peak). Up to ``max`` at once.
* **down**: when desired stays below ``spec.replicas`` for ``scale_down_delay`` seconds (and that
  long after the last scale event: hysteresis against flapping), ONE replica: the highest ordinal,
  which is the one a StatefulSet removes. First a *drain mark* ``n`` (on the shared activity
  Lease) makes every wrapper replica stop sending new requests to ordinals ``>= n``; when every
  wrapper had time to see it (``drain_grace``) and that replica has nothing running or waiting
  (or ``drain_timeout`` passed: vLLM's ``--shutdown-timeout`` drains the rest), ``/scale`` goes
  to ``n``. Demand that comes back while draining cancels the drain at once.
* Every decision depends only on what is shared (``spec.replicas``, the mark, vLLM's metrics) and
  on how long this replica has seen it, so two wrapper replicas reach the same decision; the
  driver applies it with compare-and-swap, so the second one's write is a 409 and a no-op.

Zero is not decided here: ``min: 0`` means the idle timeout (``policy.Policy``) takes the last
replica away and a request wakes it; this module keeps at least one replica while vLLM is up.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from enum import StrEnum

from .policy import Clock, SystemClock

DRAIN_ANNOTATION = "vllm-deploy/drain-from"  # on the activity Lease: ordinals >= N take no new requests


class Kind(StrEnum):
    UP = "up"
    DRAIN = "drain"  # write the drain mark
    DOWN = "down"  # patch /scale to the mark
    UNDRAIN = "undrain"  # remove the mark: demand came back while draining
    CLEAR = "clear"  # remove a stale mark (the scale-down it announced is done)


@dataclass(frozen=True, slots=True)
class Sample:
    """What this wrapper replica knows at one tick."""

    replicas: int  # spec.replicas of the StatefulSet
    ready: int  # replicas whose /metrics answered (the signal's denominator)
    demand: float | None  # running + waiting summed over those; None: no replica answered
    drain_from: int | None = None  # the drain mark on the Lease (None: no mark)
    draining_load: float | None = None  # running + waiting on ordinals >= drain_from (None: unknown)

    @property
    def draining(self) -> bool:
        return self.drain_from is not None and self.drain_from < self.replicas


@dataclass(frozen=True, slots=True)
class Action:
    kind: Kind
    to: int  # the replica count (UP/DOWN) or the mark (DRAIN); for UNDRAIN the current count
    reason: str


@dataclass(frozen=True, slots=True)
class Event:
    """A scale event this replica made, for /health and the log."""

    at: float  # wall clock
    kind: str
    replicas_from: int
    replicas_to: int
    reason: str


class AutoscalePolicy:
    def __init__(
        self,
        minimum: int,
        maximum: int,
        target: float,
        *,
        window: float = 10.0,
        scale_down_delay: float = 300.0,
        drain_grace: float = 4.0,
        drain_timeout: float = 30.0,
        clock: Clock | None = None,
        events: int = 20,
    ) -> None:
        if not 0 <= minimum <= maximum or maximum < 1:
            raise ValueError("need 0 <= min <= max and max >= 1")
        if not target > 0:
            raise ValueError("target must be > 0")
        self.minimum = minimum
        self.floor = max(1, minimum)  # 0 belongs to the idle timeout
        self.maximum = maximum
        self.target = float(target)
        self.window = window
        self.delay = scale_down_delay
        self.drain_grace = drain_grace
        self.drain_timeout = drain_timeout
        self.clock = clock or SystemClock()
        self._above_since: float | None = None
        self._above_level = 0
        self._below_since: float | None = None
        self._last_event = -math.inf
        self._mark_seen: tuple[int, int, float] | None = None  # (mark, replicas, when first seen)
        self.desired = 0  # at the last sample (0 before any)
        self.per_replica: float | None = None  # the signal: demand / ready replicas
        self.events: deque[Event] = deque(maxlen=events)

    # -- the figures -------------------------------------------------------------------------
    def wanted(self, s: Sample) -> int:
        """Replicas the demand needs, within bounds; no opinion (= spec) without a signal."""
        if s.demand is None:
            return s.replicas
        return min(self.maximum, max(self.floor, math.ceil(s.demand / self.target - 1e-9)))

    # -- the decision ------------------------------------------------------------------------
    def decide(self, s: Sample) -> Action | None:
        now = self.clock.monotonic()
        self.per_replica = None if s.demand is None or s.ready <= 0 else s.demand / s.ready
        if s.replicas <= 0:  # asleep: waking is the idle scaler's (a request wakes it)
            self._reset()
            self.desired = 0
            return None
        d = self.desired = self.wanted(s)
        if s.drain_from is not None and not s.draining:
            return Action(Kind.CLEAR, s.replicas, "stale drain mark")
        if s.draining:
            return self._drain_step(s, d, now)
        self._mark_seen = None
        if d > s.replicas:
            self._below_since = None
            if self._above_since is None:
                self._above_since, self._above_level = now, d
            else:
                self._above_level = min(self._above_level, d)
            if now - self._above_since >= self.window:
                return Action(Kind.UP, self._above_level, self._why(s, f"above for {self.window:g} s"))
            return None
        self._above_since = None
        if d < s.replicas:
            if self._below_since is None:
                self._below_since = now
            quiet = now - max(self._below_since, self._last_event)
            if quiet >= self.delay:
                return Action(Kind.DRAIN, s.replicas - 1, self._why(s, f"below for {self.delay:g} s"))
            return None
        self._below_since = None
        return None

    def _drain_step(self, s: Sample, d: int, now: float) -> Action | None:
        assert s.drain_from is not None
        mark = max(s.drain_from, s.replicas - 1)  # one replica at a time, whatever the mark says
        if d > mark:  # demand needs the replica being drained: keep it
            self._mark_seen = None
            return Action(Kind.UNDRAIN, s.replicas, self._why(s, "demand came back while draining"))
        key = (s.drain_from, s.replicas)
        if self._mark_seen is None or self._mark_seen[:2] != key:
            self._mark_seen = (*key, now)
        seen = now - self._mark_seen[2]
        if seen < self.drain_grace:  # every wrapper replica must have stopped sending to it
            return None
        if s.draining_load == 0:
            return Action(Kind.DOWN, mark, "drained: nothing running or waiting on the replica")
        if seen >= self.drain_grace + self.drain_timeout:
            return Action(Kind.DOWN, mark, f"drain timeout {self.drain_timeout:g} s: vLLM's shutdown drains the rest")
        return None

    def _why(self, s: Sample, tail: str) -> str:
        signal = "no signal" if self.per_replica is None else f"{self.per_replica:.2f} in flight per ready replica"
        return f"{signal} (target {self.target:g}, {s.ready}/{s.replicas} ready): {tail}"

    # -- outcomes ----------------------------------------------------------------------------
    def applied(self, action: Action, replicas_from: int, wall: float | None = None) -> None:
        """The driver made ``action`` happen (its write succeeded)."""
        now = self.clock.monotonic()
        if action.kind in (Kind.UP, Kind.DOWN):
            self._last_event = now
            self._above_since = self._below_since = None
        if action.kind is Kind.UNDRAIN:
            self._below_since = None  # the delay starts again
        if action.kind is Kind.CLEAR:
            return
        self.events.append(
            Event(
                self.clock.wall() if wall is None else wall,
                action.kind.value,
                replicas_from,
                action.to if action.kind is not Kind.UNDRAIN else replicas_from,
                action.reason,
            )
        )

    def _reset(self) -> None:
        self._above_since = self._below_since = None
        self._mark_seen = None


def routable(replicas: int, drain_from: int | None) -> int:
    """Ordinals below this take new requests: those that exist, minus those being drained."""
    n = max(0, replicas)
    return n if drain_from is None else min(n, max(drain_from, 0))


__all__ = ["DRAIN_ANNOTATION", "Action", "AutoscalePolicy", "Event", "Kind", "Sample", "routable"]
