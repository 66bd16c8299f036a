"""The driver: a background loop that lets vLLM sleep, and the gate every upstream call passes.

* :meth:`Scaler.admit` (the ``Upstream.ready()`` seam): records activity; when vLLM is ready it
  returns at once (one annotation write on the request path at most once per publishing
  interval, which also catches a scale-down another replica just made); otherwise it starts
  (or joins) the single wake of this replica and holds the request up to ``wake_timeout``,
  then raises 503 with ``Retry-After``. ``wake_timeout == 0`` answers 503 at once (the wake
  still starts).
* :meth:`Scaler.tick` (every ``tick`` seconds): reads the StatefulSet, publishes pending
  activity, and scales to zero when the whole service was idle for ``idle_timeout``.
* Waking publishes activity first, then patches ``/scale`` to 1 with the resourceVersion it
  read: if another replica woke it first, 409 → re-read → already 1 → nothing to do.
* A scale-down is preconditioned on the StatefulSet's resourceVersion, the activity on the
  Lease's: right after scaling down, the Lease is read again and fresher activity wakes vLLM.
* Kubernetes API errors never escape the loop; on the request path they become 503 +
  ``Retry-After`` unless vLLM answers its own ``/health`` (then the request is served).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ..errors import APIError
from .kube import Conflict, KubeError, StatefulSetAPI
from .loop import every
from .policy import ANNOTATION, Clock, Observation, Policy, ScaleState, SystemClock

log = logging.getLogger("wrapper.scaling")

RETRY_AFTER = "10"
CONFLICT_RETRIES = 5
ERROR_LOG_EVERY = 60.0
REQUEST_PATH_API_SECONDS = 2.0  # the bounded-rate activity write a served request may wait for


class ScalerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry if registry is not None else CollectorRegistry()
        self.wakes = Counter("vllm_wrapper_scale_wakes", "Scale-ups from zero this replica made (0 -> 1)", registry=r)
        self.scale_downs = Counter(
            "vllm_wrapper_scale_downs", "Scale-downs to zero this replica made after the idle timeout", registry=r
        )
        self.wake_duration = Histogram(
            "vllm_wrapper_scale_wake_duration_seconds",
            "From the first request that found vLLM scaled to zero (or waking) to vLLM ready, seen by this replica",
            buckets=(1, 2.5, 5, 10, 20, 30, 60, 90, 120, 180, 300, 600, 900, 1800),
            registry=r,
        )
        self.scaled_to_zero = Counter(
            "vllm_wrapper_scaled_to_zero_seconds",
            "Time this replica observed vLLM at zero replicas (replicas agree: take max, not sum)",
            registry=r,
        )
        self.held = Gauge("vllm_wrapper_scale_held_requests", "Requests held while vLLM wakes", registry=r)
        self.rejected = Counter(
            "vllm_wrapper_scale_rejected",
            "Requests answered 503 because vLLM was asleep or waking",
            ["reason"],
            registry=r,
        )
        self.api_errors = Counter(
            "vllm_wrapper_scale_api_errors", "Failed Kubernetes API calls", ["op", "code"], registry=r
        )
        self.state = Gauge(
            "vllm_wrapper_scale_state", "1 for the current state of vLLM's StatefulSet", ["state"], registry=r
        )
        for s in ScaleState:
            self.state.labels(s.value).set(0)
        # What the StatefulSet said at this replica's last read: dashboards show ready/desired.
        self.replicas = Gauge(
            "vllm_wrapper_scale_replicas", "spec.replicas of vLLM's StatefulSet, as last read", registry=r
        )
        self.ready_replicas = Gauge(
            "vllm_wrapper_scale_ready_replicas", "status.readyReplicas of vLLM's StatefulSet, as last read", registry=r
        )


# How often a wake reads the StatefulSet for ready replicas: held requests wait on it, so it is
# the wrapper's share of a wake (half of it on average). Two reads a second per wrapper replica,
# only while vLLM wakes, is well inside client-go's default 5 requests/s.
WAKE_POLL_SECONDS = 0.5


class Scaler:
    def __init__(
        self,
        api: StatefulSetAPI,
        policy: Policy,
        *,
        wake_timeout: float,
        metrics: ScalerMetrics | None = None,
        probe: Callable[[], Awaitable[bool]] | None = None,
        busy: Callable[[], bool] | None = None,
        poll: float | None = None,
        probe_grace: float = 10.0,
        max_wake_poll: float = 1800.0,
        clock: Clock | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        wake_replicas: int = 1,
    ) -> None:
        self.api = api
        self.wake_replicas = wake_replicas  # vllm.replicas: a wake brings them all back
        self.policy = policy
        self.wake_timeout = wake_timeout
        self.metrics = metrics or ScalerMetrics()
        self.probe = probe
        self.busy = busy or (lambda: False)
        self.poll = poll if poll is not None else min(WAKE_POLL_SECONDS, policy.tick)
        self.probe_grace = probe_grace
        self.max_wake_poll = max_wake_poll
        self.clock = clock or policy.clock or SystemClock()
        self.sleep = sleep
        self.obs: Observation | None = None
        self._wake: asyncio.Task[None] | None = None
        self._wake_started: float | None = None
        self._down: asyncio.Task[None] | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._holding = 0
        self._zero_accounted: float | None = None
        self._last_error_log: dict[str, float] = {}
        self._set_state(ScaleState.UNKNOWN)

    # -- state -------------------------------------------------------------------------------
    @property
    def state(self) -> ScaleState:
        return self._state

    def _set_state(self, state: ScaleState) -> None:
        old = getattr(self, "_state", None)
        now = self.clock.monotonic()
        if old == ScaleState.SCALED_TO_ZERO and self._zero_accounted is not None:
            self.metrics.scaled_to_zero.inc(max(0.0, now - self._zero_accounted))
        self._zero_accounted = now if state == ScaleState.SCALED_TO_ZERO else None
        if old != state:
            if old is not None:
                self.metrics.state.labels(old.value).set(0)
                log.info("vLLM scale state", extra={"from": old.value, "to": state.value})
            self.metrics.state.labels(state.value).set(1)
        self._state = state

    def _observe(self, obs: Observation) -> None:
        self.obs = obs
        self.metrics.replicas.set(obs.replicas)
        self.metrics.ready_replicas.set(obs.ready_replicas)
        self._set_state(self.policy.observe(obs))

    def _api_error(self, op: str, exc: KubeError) -> None:
        self.metrics.api_errors.labels(op, str(exc.status)).inc()
        now = self.clock.monotonic()
        if now - self._last_error_log.get(op, -1e18) >= ERROR_LOG_EVERY:
            self._last_error_log[op] = now
            log.warning("kubernetes API call failed", extra={"op": op, "status": exc.status, "error": str(exc)})

    def _ready(self) -> bool:
        return self._state == ScaleState.READY

    @property
    def waking(self) -> bool:
        return self._wake is not None and not self._wake.done()

    def _busy(self) -> bool:
        return self._holding > 0 or self.waking or self.busy()

    # -- life cycle --------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop_task = asyncio.ensure_future(self._loop())

    async def stop(self) -> None:
        for task in (self._loop_task, self._wake, self._down):
            if task is not None and not task.done():
                task.cancel()
        for task in (self._loop_task, self._wake, self._down):
            if task is not None:
                try:
                    await task
                except (asyncio.CancelledError, Exception):
                    pass
        await self.api.close()

    async def _loop(self) -> None:
        await every(self.policy.tick, self.tick, self.sleep, log, "scale-to-zero")

    # -- the background tick -----------------------------------------------------------------
    async def tick(self) -> None:
        if self._busy():
            self.policy.record_activity()
        try:
            obs = await self.api.read()
        except KubeError as exc:
            self._api_error("read", exc)
            return
        self._observe(obs)
        if self.policy.publish_due():
            obs = await self._publish(obs)
        if self.policy.should_scale_down(obs) and not self._busy():
            self._down = asyncio.ensure_future(self._scale_down(obs))
            await asyncio.shield(self._down)
        elif self.state == ScaleState.SCALED_TO_ZERO:
            self._set_state(ScaleState.SCALED_TO_ZERO)  # account the time spent at zero

    async def _publish(self, obs: Observation) -> Observation:
        """Write own activity into the annotation (compare-and-swap on resourceVersion)."""
        try:
            for _ in range(CONFLICT_RETRIES):
                pending = self.policy.value_to_publish()
                if pending is None:
                    return obs
                value, own = pending
                try:
                    obs = await self.api.annotate(ANNOTATION, value, obs.activity_version)
                except Conflict:
                    obs = await self.api.read()
                    self._observe(obs)
                    continue
                self.policy.published(own)
                self._observe(obs)
                return obs
        except KubeError as exc:
            self._api_error("annotate", exc)
        finally:
            self.policy.write_attempted()
        return obs

    async def _scale_down(self, obs: Observation) -> None:
        try:
            for _ in range(CONFLICT_RETRIES):
                # Re-check right before the write: a request may have arrived meanwhile.
                if self._busy() or not self.policy.should_scale_down(obs):
                    return
                try:
                    await self.api.scale(0, obs.resource_version)
                except Conflict:
                    # Someone wrote (fresh activity, or a wake): read again and decide again.
                    obs = await self.api.read()
                    self._observe(obs)
                    continue
                self.metrics.scale_downs.inc()
                log.info(
                    "scaled vLLM to zero",
                    extra={"idle_seconds": round(self.policy.idle_for(), 1), "idle_timeout": self.policy.idle},
                )
                self._observe(
                    Observation(0, obs.ready_replicas, obs.activity, obs.resource_version, obs.activity_version)
                )
                await self._undo_if_raced()
                return
        except KubeError as exc:
            self._api_error("scale_down", exc)

    async def _undo_if_raced(self) -> None:
        """Activity lives on the Lease and the replica count on the StatefulSet: no single
        precondition covers both. Another replica may have published activity between our read
        and our scale-down; then that request counts, so wake vLLM straight back up."""
        obs = await self.api.read()
        self._observe(obs)
        if obs.replicas == 0 and self.policy.idle_for() < self.policy.idle:
            log.info("fresh activity raced the scale-down: waking vLLM again")
            self._ensure_wake()

    # -- the request gate --------------------------------------------------------------------
    async def admit(self) -> None:
        """Called before every upstream request; returns when vLLM can take it."""
        self.policy.record_activity()
        if self._down is not None and not self._down.done():
            await asyncio.shield(self._down)  # a scale-down in flight: wait for its outcome
        if self._state == ScaleState.READY:
            if self.policy.publish_due() and self.obs is not None:
                try:  # may reveal that another replica scaled to zero; never stalls a request long
                    async with asyncio.timeout(REQUEST_PATH_API_SECONDS):
                        await self._publish(self.obs)
                except TimeoutError:
                    self.metrics.api_errors.labels("annotate", "timeout").inc()
            if self._state == ScaleState.READY:
                return
        wake = self._ensure_wake()
        if self.wake_timeout <= 0:
            self.metrics.rejected.labels("holding_disabled").inc()
            raise self._unavailable("the model server is scaled to zero and is waking up; retry later")
        self._holding += 1
        self.metrics.held.inc()
        try:
            try:
                await asyncio.wait_for(asyncio.shield(wake), self.wake_timeout)
            except TimeoutError:
                self.metrics.rejected.labels("wake_timeout").inc()
                raise self._unavailable(
                    f"the model server is still waking up after {self.wake_timeout:g} s (VLLM_WAKE_TIMEOUT); retry later"
                ) from None
        finally:
            self._holding -= 1
            self.metrics.held.dec()
        if self._ready():  # the wake task moved the state while we waited
            return
        # The wake failed (API error) or gave up: serve if vLLM answers anyway, else 503.
        if self.probe is not None and await self._probe():
            return
        self.metrics.rejected.labels("wake_failed").inc()
        raise self._unavailable("the model server is scaled to zero and could not be woken; retry later")

    @staticmethod
    def _unavailable(message: str) -> APIError:
        return APIError(503, message, code="model_waking", headers={"Retry-After": RETRY_AFTER})

    async def _probe(self) -> bool:
        try:
            return bool(await self.probe()) if self.probe is not None else True
        except Exception:
            return False

    def _ensure_wake(self) -> asyncio.Task[None]:
        if self._wake is None or self._wake.done():
            self._wake = asyncio.ensure_future(self._run_wake())
        return self._wake

    async def _run_wake(self) -> None:
        started = self.clock.monotonic()
        try:
            await self._wake_up(started)
        except KubeError as exc:
            self._api_error("wake", exc)
        except Exception:  # a bug: held requests get 503 (or are served if vLLM answers), logged
            log.exception("wake failed")

    async def _wake_up(self, started: float) -> None:
        """Make sure the StatefulSet has a replica, then poll until one is ready."""
        scaled = False
        seen_ready: float | None = None
        while self.clock.monotonic() - started < self.max_wake_poll:
            obs = await self.api.read()
            self._observe(obs)
            if self.policy.needs_wake(obs) and not scaled:
                # Fresh activity first, so no other replica scales it straight back down.
                obs = await self._publish(obs)
                for _ in range(CONFLICT_RETRIES):
                    if not self.policy.needs_wake(obs):
                        break
                    try:
                        await self.api.scale(self.wake_replicas, obs.resource_version)
                    except Conflict:
                        obs = await self.api.read()
                        self._observe(obs)
                        continue
                    self.metrics.wakes.inc()
                    log.info(
                        "woke vLLM",
                        extra={"statefulset": getattr(self.api, "name", None), "replicas": self.wake_replicas},
                    )
                    break
                scaled = True
                continue
            if obs.ready_replicas >= 1 and obs.replicas >= 1:
                # Ready by Kubernetes; give the Service endpoints a moment to catch up.
                if seen_ready is None:
                    seen_ready = self.clock.monotonic()
                if self.probe is None or await self._probe() or self.clock.monotonic() - seen_ready >= self.probe_grace:
                    self.metrics.wake_duration.observe(self.clock.monotonic() - started)
                    log.info("vLLM ready", extra={"wake_seconds": round(self.clock.monotonic() - started, 3)})
                    return
            elif obs.replicas <= 0:
                scaled = False  # scaled down again meanwhile (by hand?): wake again
            await self.sleep(self.poll)


__all__ = ["RETRY_AFTER", "Scaler", "ScalerMetrics"]
