"""The replicas the wrapper may send a request to, and which of them are in rotation.

A :class:`Backend` is one vLLM server (one pod). Its ``name`` is its identity: the pod name
when discovered, else ``host:port``; prefix routing hashes it, so every wrapper process that
sees the same set of names makes the same choice.

Passive ejection (what Envoy calls outlier detection): ``eject_after`` consecutive failures
(connect error, or 502/503/504 before any byte reached the client) take a replica out of
rotation for at least ``eject_seconds``; the prober (:mod:`.router`) then lets it back in as
soon as its ``/health`` answers 200.

Active readiness: with several replicas the prober also asks every replica in rotation for its
``/health`` (what the kubelet's readiness probe asks) every second, and a failed probe counts
as a failure: a replica that stops answering is out within ``eject_after`` seconds even with no
request sent to it. That is what keeps a replica that stops being ready, or is terminating,
from getting new requests within a few seconds when the replicas are pod DNS names (README.md
in this directory says why DNS alone is not enough). When every replica is ejected the pool routes to all of
them anyway ("panic mode"): trying beats answering 503 at once, and a single backend then
behaves exactly as the wrapper always did.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from hashlib import blake2b
from urllib.parse import urlsplit

from ..settings import root_of


def name_of(base: str) -> str:
    """``host:port`` of a base URL (the port the scheme implies when none is written)."""
    u = urlsplit(base)
    port = u.port or (443 if u.scheme == "https" else 80)
    host = u.hostname or ""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(eq=False, slots=True)
class Backend:
    name: str
    base: str  # the OpenAI base URL, ``.../v1``
    pod: str | None = None
    root: str = ""
    hash: int = 0
    in_flight: int = 0
    failures: int = 0  # consecutive
    ejected_until: float | None = None  # monotonic time; None = in rotation
    healthy: bool | None = None  # the last /health probe; None = not probed yet
    requests: int = 0  # sent to this replica (every attempt)
    failed: int = 0  # attempts that failed (connect error, 502/503/504)
    ejections: int = 0
    _urls: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root = root_of(self.base)
        self.hash = int.from_bytes(blake2b(self.name.encode(), digest_size=8).digest(), "little")

    @property
    def ejected(self) -> bool:
        return self.ejected_until is not None

    def url(self, path: str) -> str:
        u = self._urls.get(path)
        if u is None:
            u = self._urls[path] = self.base + path
        return u

    def release(self) -> None:
        self.in_flight -= 1


class Pool:
    """The current members; swapped whole by discovery, never mutated in place."""

    def __init__(
        self,
        static: Iterable[Backend],
        *,
        eject_after: int = 3,
        eject_seconds: float = 5.0,
        clock=time.monotonic,
    ) -> None:
        self.static = tuple(static)
        self.members: tuple[Backend, ...] = self.static
        self.discovered = False
        self.eject_after = eject_after
        self.eject_seconds = eject_seconds
        self.clock = clock
        self.version = 0  # bumped on every membership change
        # candidates() with nothing excluded, the question of every request: kept until a member
        # joins, leaves, is ejected or comes back (all of which go through this class).
        self._live: tuple[Backend, ...] | None = None

    # -- membership --------------------------------------------------------------------------
    def replace(self, found: Iterable[tuple[str, str, str | None]]) -> None:
        """New members ``(name, base, pod)`` from discovery; an empty set falls back to the
        static list (the Service URL), so a lost API server never leaves the wrapper without
        a backend. A member that stays keeps its object (its in-flight count, its ejection)."""
        current = {(b.name, b.base): b for b in self.members}
        new = tuple(current.get((n, base)) or Backend(n, base, pod) for n, base, pod in found)
        self.discovered = bool(new)
        members = new or self.static
        if tuple(map(id, members)) != tuple(map(id, self.members)):
            self.members = members
            self.version += 1
            self._live = None

    # -- rotation ----------------------------------------------------------------------------
    def candidates(self, exclude: Sequence[Backend] = ()) -> Sequence[Backend]:
        """Members in rotation, minus ``exclude``; all non-excluded ones when every member is ejected.

        With nothing excluded (every first attempt) the answer is one tuple, the same object
        until the rotation changes: the policy recognises it by identity (policy.py)."""
        if not exclude:
            live = self._live
            if live is None:
                live = self._live = tuple(b for b in self.members if b.ejected_until is None) or self.members
            return live
        rest = [b for b in self.members if b not in exclude]  # identity: Backend has eq=False
        return [b for b in rest if b.ejected_until is None] or rest

    def succeeded(self, b: Backend) -> None:
        b.failures = 0

    def failed_once(self, b: Backend, *, attempt: bool = True) -> bool:
        """Count a failure (a request attempt's, or with ``attempt=False`` a health probe's);
        True when it ejected the replica."""
        b.failed += attempt
        b.failures += 1
        if b.ejected_until is None and b.failures >= self.eject_after and len(self.members) > 1:
            b.ejected_until = self.clock() + self.eject_seconds
            b.ejections += 1
            self._live = None
            return True
        return False

    def readmit(self, b: Backend) -> None:
        b.ejected_until = None
        b.failures = 0
        self._live = None

    def due_for_probe(self) -> list[Backend]:
        now = self.clock()
        return [b for b in self.members if b.ejected_until is not None and now >= b.ejected_until]


__all__ = ["Backend", "Pool", "name_of"]
