"""The autoscaler's driver: every ``tick`` it reads the StatefulSet and the activity Lease, scrapes
each existing vLLM replica's ``/metrics``, asks :class:`AutoscalePolicy` and applies the answer
with compare-and-swap writes; it also tells the router which replicas take no new requests.

Writes (the Role already allows them, by name: nothing new in RBAC):

* scale up / down: merge-``PATCH`` of ``statefulsets/scale`` with the resourceVersion read; a 409
  means another wrapper replica (or anyone) wrote first: re-read, and if the count is already
  what was wanted, nothing to do; otherwise decide again at the next tick.
* the drain mark: merge-``PATCH`` of the Lease annotation ``vllm-deploy/drain-from`` with the
  Lease's resourceVersion; ``null`` removes it.

Replica ``i`` is the ``i``-th URL of ``VLLM_BASE_URL`` (on Kubernetes, pod ``<sts>-i`` by its DNS
name under the headless Service). The router holds back (sends nothing new to, unless nothing
else is left) the ordinals ``>= routable(replicas, mark)``, and those below that whose
``/metrics`` did not answer while at least one did (not up yet, or gone): a replica enters
rotation as soon as one scrape sees it serving.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Gauge

from ..routing.backends import name_of
from ..routing.router import Router
from ..settings import root_of
from .autoscale_policy import DRAIN_ANNOTATION, Action, AutoscalePolicy, Kind, Sample, routable
from .kube import Conflict, KubeError, StatefulSetAPI
from .loop import every
from .policy import Observation

log = logging.getLogger("wrapper.scaling.autoscale")

LOAD_METRICS = ("vllm:num_requests_running", "vllm:num_requests_waiting")
# Counters of vLLM's end-to-end latency histogram: the seconds every finished request took, from
# arrival to its last token, added up; and how many finished.
LATENCY_SUM = "vllm:e2e_request_latency_seconds_sum"
LATENCY_COUNT = "vllm:e2e_request_latency_seconds_count"
CONFLICT_RETRIES = 3
Scrape = Callable[[str], Awaitable["float | None"]]


def page_sums(text: str, names: tuple[str, ...]) -> dict[str, float]:
    """Each of ``names`` on one ``/metrics`` page, summed over its label sets (one per model /
    engine), in one pass; a name the page lacks is left out."""
    sums: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith(names):
            continue
        name, brace, rest = line.partition("{")
        if brace:  # name{labels} value [timestamp]
            fields = rest[rest.rfind("}") + 1 :].split()
        else:  # name value [timestamp]
            name, *fields = line.split()
        name = name.strip()
        if name in names and fields:
            sums[name] = sums.get(name, 0.0) + float(fields[0])
    return sums


def load_of(sums: dict[str, float]) -> float:
    """``vllm:num_requests_running + vllm:num_requests_waiting``; ValueError when neither is there (not vLLM)."""
    if not any(n in sums for n in LOAD_METRICS):
        raise ValueError("no vllm:num_requests_running / _waiting in /metrics")
    return sum(sums.get(n, 0.0) for n in LOAD_METRICS)


def latency_of(sums: dict[str, float]) -> tuple[float, float] | None:
    """(``_sum``, ``_count``) of ``vllm:e2e_request_latency_seconds``; None without both."""
    if LATENCY_SUM not in sums or LATENCY_COUNT not in sums:
        return None
    return sums[LATENCY_SUM], sums[LATENCY_COUNT]


def parse_load(text: str) -> float:
    """:func:`load_of` one ``/metrics`` page."""
    return load_of(page_sums(text, LOAD_METRICS))


def parse_latency(text: str) -> tuple[float, float] | None:
    """:func:`latency_of` one ``/metrics`` page."""
    return latency_of(page_sums(text, (LATENCY_SUM, LATENCY_COUNT)))


SCRAPED = (*LOAD_METRICS, LATENCY_SUM, LATENCY_COUNT)


class BusyTime:
    """The mean number of requests a replica had in flight between two scrapes, by Little's law:
    the seconds its finished requests took, added up over the interval, divided by the interval.

    Why beside the gauge: ``num_requests_running`` is a point sample taken at vLLM's last engine
    step. Clients that send short requests in lock step (all finishing in one step, then sending
    again) are often caught at 0 between batches, which would reset the sustain window at every
    dip. The mean over the interval does not dip; the gauge, in turn, sees long streams that have
    not finished yet. The demand of a replica is the larger of the two.

    Little's law counts a request's whole duration when it finishes, so a one-minute request that
    ends inside a one-second interval would read as 60 in flight. No more requests can have been in
    flight during the interval than finished in it plus those still running at its end, so the mean
    is capped there: that request counts as one."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, float, float]] = {}  # root -> (time, latency sum, count)
        self._mean: dict[str, float] = {}  # root -> the figure of its last scrape

    def update(self, root: str, now: float, latency: tuple[float, float] | None, in_flight: float) -> float | None:
        """The mean in flight at ``root`` since its previous scrape; None without one to compare."""
        mean = self._update(root, now, latency, in_flight)
        if mean is None:
            self._mean.pop(root, None)
        else:
            self._mean[root] = mean
        return mean

    def forget(self, root: str) -> None:
        """``root`` did not answer: its next scrape starts a new interval."""
        self._last.pop(root, None)
        self._mean.pop(root, None)

    def mean(self, root: str) -> float:
        """The figure of ``root``'s last scrape; 0 when it had none."""
        return self._mean.get(root, 0.0)

    def _update(self, root: str, now: float, latency: tuple[float, float] | None, in_flight: float) -> float | None:
        if latency is None:
            self._last.pop(root, None)
            return None
        total, finished = latency
        previous = self._last.get(root)
        self._last[root] = (now, total, finished)
        if previous is None or now <= previous[0] or total < previous[1] or finished < previous[2]:
            return None  # the first scrape, or the counters went back: vLLM restarted
        mean = (total - previous[1]) / (now - previous[0])
        return min(mean, finished - previous[2] + in_flight)


class AutoscaleMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry if registry is not None else CollectorRegistry()
        self.registry = r
        self.desired = Gauge(
            "vllm_wrapper_autoscale_desired_replicas", "Replicas the demand needs, within min and max", registry=r
        )
        self.replicas = Gauge("vllm_wrapper_autoscale_replicas", "spec.replicas of vLLM's StatefulSet", registry=r)
        self.ready = Gauge(
            "vllm_wrapper_autoscale_ready_replicas",
            "vLLM replicas whose /metrics answered at the last tick",
            registry=r,
        )
        self.signal = Gauge(
            "vllm_wrapper_autoscale_in_flight_per_replica",
            "The signal: running + waiting requests per ready vLLM replica (from vLLM's /metrics)",
            registry=r,
        )
        self.target = Gauge("vllm_wrapper_autoscale_target_in_flight", "The target of the signal", registry=r)
        self.routable = Gauge(
            "vllm_wrapper_autoscale_routable_replicas", "Replicas taking new requests (not drained)", registry=r
        )
        self.events = Counter(
            "vllm_wrapper_autoscale_events", "Scale events this wrapper replica made", ["kind"], registry=r
        )
        self.api_errors = Counter(
            "vllm_wrapper_autoscale_api_errors",
            "Failed Kubernetes API calls of the autoscaler",
            ["op", "code"],
            registry=r,
        )


class Autoscaler:
    def __init__(
        self,
        api: StatefulSetAPI,
        policy: AutoscalePolicy,
        router: Router,
        bases: Sequence[str],
        *,
        tick: float = 2.0,
        scrape: Scrape | None = None,
        metrics: AutoscaleMetrics | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.api = api
        self.policy = policy
        self.router = router
        self.roots = [root_of(b) for b in bases]
        self.names = [name_of(b) for b in bases]
        self.tick_seconds = tick
        self._scrape = scrape or self._http_scrape
        self.metrics = metrics or AutoscaleMetrics()
        self.metrics.target.set(policy.target)
        self.sleep = sleep
        self.obs: Observation | None = None
        self.loads: list[float | None] = []
        self._busy = BusyTime()
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None

    # -- life cycle --------------------------------------------------------------------------
    async def start(self) -> None:
        self._task = asyncio.ensure_future(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        if self._session is not None:
            await self._session.close()
        await self.api.close()

    async def _loop(self) -> None:
        await every(self.tick_seconds, self.tick, self.sleep, log, "autoscale")

    async def _http_scrape(self, root: str) -> float | None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=min(2.0, self.tick_seconds)))
        try:
            async with self._session.get(root + "/metrics") as resp:
                if resp.status != 200:
                    return None
                sums = page_sums(await resp.text(), SCRAPED)
                load = load_of(sums)
        except (aiohttp.ClientError, TimeoutError, ValueError, UnicodeDecodeError):
            self._busy.forget(root)
            return None
        self._busy.update(root, self.policy.clock.monotonic(), latency_of(sums), load)
        return load

    # -- one tick ----------------------------------------------------------------------------
    async def tick(self) -> Action | None:
        try:
            obs = await self.api.read()
        except KubeError as exc:
            self._api_error("read", exc)
            return None
        self.obs = obs
        existing = min(max(obs.replicas, 0), len(self.roots))
        self.loads = list(await asyncio.gather(*(self._scrape(r) for r in self.roots[:existing])))
        sample = self._sample(obs)
        self._route(sample)
        action = self.policy.decide(sample)
        self._gauges(sample)
        if action is not None:
            await self._apply(action, obs)
        return action

    def _sample(self, obs: Observation) -> Sample:
        answered = [x for x in self.loads if x is not None]
        mark = _ordinal(obs.drain)
        draining: float | None = None
        if mark is not None and mark < obs.replicas:
            draining = 0.0
            for i in range(max(mark, 0), len(self.loads)):
                load = self.loads[i]
                # Not answering: what this wrapper still has in flight there (it cannot see others').
                draining += load if load is not None else self._local_in_flight(i)
        demand = sum(
            max(load, self._busy.mean(root))
            for root, load in zip(self.roots, self.loads, strict=False)
            if load is not None
        )
        return Sample(obs.replicas, len(answered), demand if answered else None, mark, draining)

    def _local_in_flight(self, ordinal: int) -> float:
        name = self.names[ordinal]
        return float(sum(b.in_flight for b in self.router.pool.members if b.name == name))

    def _route(self, s: Sample) -> None:
        """Tell the router which replicas take new requests."""
        n = routable(s.replicas, s.drain_from)
        serving = {i for i, load in enumerate(self.loads) if load is not None and i < n}
        # No scrape answered: no opinion beyond what exists and is not drained.
        keep = serving or set(range(min(n, len(self.names)))) or set(range(len(self.names)))
        held = frozenset(name for i, name in enumerate(self.names) if i not in keep)
        if held != self.router.held_back:
            self.router.held_back = held
            log.info("routable replicas", extra={"routable": sorted(keep), "held_back": sorted(held)})
        self.metrics.routable.set(len(keep))

    def _gauges(self, s: Sample) -> None:
        m = self.metrics
        m.replicas.set(s.replicas)
        m.ready.set(s.ready)
        m.desired.set(self.policy.desired)
        m.signal.set(self.policy.per_replica or 0.0)

    # -- applying a decision -----------------------------------------------------------------
    async def _apply(self, action: Action, obs: Observation) -> None:
        try:
            if action.kind in (Kind.UP, Kind.DOWN):
                if action.kind is Kind.UP and obs.drain is not None:
                    obs, _ = await self._mark(None, obs)  # new replicas must not start out held back
                if await self._scale(action.to, obs):
                    self._done(action, obs.replicas)
            elif action.kind is Kind.DRAIN:
                if (await self._mark(str(action.to), obs))[1]:
                    self._done(action, obs.replicas)
            elif (await self._mark(None, obs))[1] and action.kind is Kind.UNDRAIN:  # UNDRAIN / CLEAR
                self._done(action, obs.replicas)
        except KubeError as exc:
            self._api_error(action.kind.value, exc)

    def _done(self, action: Action, replicas_from: int) -> None:
        self.policy.applied(action, replicas_from)
        self.metrics.events.labels(action.kind.value).inc()
        log.info(
            "autoscale",
            extra={"kind": action.kind.value, "from": replicas_from, "to": action.to, "reason": action.reason},
        )

    async def _scale(self, to: int, obs: Observation) -> bool:
        """``/scale`` to ``to`` with the resourceVersion read; False when someone else got there first."""
        decided_on = obs.replicas
        for _ in range(CONFLICT_RETRIES):
            if obs.replicas != decided_on or obs.replicas <= 0:
                return False  # another wrapper replica moved it (most often: to the same count), or zero
            try:
                await self.api.scale(to, obs.resource_version)
                return True
            except Conflict:
                # A status update (readyReplicas) also moves the resourceVersion: then the count is
                # still what the decision was made on, and the same write is tried again.
                obs = self.obs = await self.api.read()
        return False

    async def _mark(self, value: str | None, obs: Observation) -> tuple[Observation, bool]:
        """Set (or with None remove) the drain mark, CAS on the Lease; True when this replica wrote it."""
        for _ in range(CONFLICT_RETRIES):
            if obs.drain == value:
                return obs, False  # already so (another wrapper replica was first)
            try:
                return await self.api.annotate(DRAIN_ANNOTATION, value, obs.activity_version), True
            except Conflict:
                obs = self.obs = await self.api.read()
        return obs, False

    def _api_error(self, op: str, exc: KubeError) -> None:
        self.metrics.api_errors.labels(op, str(exc.status)).inc()
        log.warning("kubernetes API call failed", extra={"op": op, "status": exc.status, "error": str(exc)})

    # -- /health -----------------------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        p, obs = self.policy, self.obs
        return {
            "min": p.minimum,
            "max": p.maximum,
            "target_in_flight": p.target,
            "replicas": None if obs is None else obs.replicas,
            "desired": p.desired,
            "ready": sum(1 for x in self.loads if x is not None),
            "in_flight_per_replica": None if p.per_replica is None else round(p.per_replica, 3),
            "draining_from": None if obs is None else _ordinal(obs.drain),
            "held_back": sorted(self.router.held_back),
            "events": [
                {"at": e.at, "kind": e.kind, "from": e.replicas_from, "to": e.replicas_to, "reason": e.reason}
                for e in p.events
            ],
        }


def _ordinal(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        n = int(str(value).strip())
    except ValueError:
        return None  # garbled: no mark (a stale or hand-written value must not hold replicas back)
    return n if n >= 0 else None


__all__ = ["AutoscaleMetrics", "Autoscaler", "BusyTime", "parse_latency", "parse_load"]
