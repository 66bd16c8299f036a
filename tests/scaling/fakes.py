"""In-memory stand-ins for the fast tests: a controllable clock and one StatefulSet shared by
any number of wrapper replicas (each a Scaler with its own Policy), behaving like the API server
for the three calls of the seam (resourceVersion preconditions included)."""

from __future__ import annotations

import asyncio

from wrapper.scaling.kube import Conflict, KubeError
from wrapper.scaling.policy import ANNOTATION, Observation


class FakeClock:
    def __init__(self, wall: float = 1_800_000_000.0) -> None:
        self.mono = 1000.0
        self.wall_t = wall

    def monotonic(self) -> float:
        return self.mono

    def wall(self) -> float:
        return self.wall_t

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall_t += seconds

    def jump_wall(self, seconds: float) -> None:
        """NTP step or a bad RTC: the wall clock moves, monotonic time does not."""
        self.wall_t += seconds


class ReplicaClock:
    """One wrapper replica's clocks over a shared true time, with its own wall-clock offset."""

    def __init__(self, base: FakeClock, wall_offset: float = 0.0) -> None:
        self.base = base
        self.wall_offset = wall_offset

    def monotonic(self) -> float:
        return self.base.mono

    def wall(self) -> float:
        return self.base.wall_t + self.wall_offset


class FakeStatefulSet:
    """The StatefulSet (spec.replicas, readyReplicas, resourceVersion) and the activity Lease
    (its annotations and its own resourceVersion): two objects, two preconditions."""

    def __init__(self, replicas: int = 1, ready: int | None = None, annotation: str | None = None) -> None:
        self.replicas = replicas
        self.ready = replicas if ready is None else ready
        self.annotations: dict[str, str] = {} if annotation is None else {ANNOTATION: annotation}
        self.rv = 100
        self.lease_rv = 7
        self.calls: list[tuple] = []
        self.fail: dict[str, KubeError] = {}  # op -> error raised (until removed)
        self.auto_ready = True  # a scale to N>0 makes N ready (the model "loads" instantly)

    def _check(self, op: str) -> None:
        if op in self.fail:
            raise self.fail[op]

    def _precondition(self, rv: str | None, current: int | None = None) -> None:
        if rv is not None and rv != str(self.rv if current is None else current):
            raise Conflict(409, "Conflict", "the object has been modified; please apply your changes to the latest version and try again")

    def obs(self) -> Observation:
        return Observation(self.replicas, self.ready, self.annotations.get(ANNOTATION), str(self.rv), str(self.lease_rv))

    def client(self, name: str = "replica") -> FakeAPI:
        return FakeAPI(self, name)


class FakeAPI:
    """One replica's seam onto the shared :class:`FakeStatefulSet`."""

    name = "vllm"

    def __init__(self, sts: FakeStatefulSet, who: str) -> None:
        self.sts = sts
        self.who = who

    async def read(self) -> Observation:
        await asyncio.sleep(0)
        self.sts.calls.append((self.who, "read"))
        self.sts._check("read")
        return self.sts.obs()

    async def annotate(self, key: str, value: str, resource_version: str | None) -> Observation:
        await asyncio.sleep(0)
        self.sts.calls.append((self.who, "annotate", value))
        self.sts._check("annotate")
        self.sts._precondition(resource_version, self.sts.lease_rv)
        self.sts.annotations[key] = value
        self.sts.lease_rv += 1
        return self.sts.obs()

    async def scale(self, replicas: int, resource_version: str | None) -> int:
        await asyncio.sleep(0)
        self.sts.calls.append((self.who, "scale", replicas))
        self.sts._check("scale")
        self.sts._precondition(resource_version)
        self.sts.replicas = replicas
        self.sts.ready = replicas if (self.sts.auto_ready or replicas == 0) else 0
        self.sts.rv += 1
        return replicas

    async def close(self) -> None:
        pass
