"""Routing policies: pure choices among candidate backends (no I/O; prefix reads a clock).

``prefix`` is consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam, "Consistent
Hashing with Bounded Loads", 2016; HAProxy's ``hash-balance-factor``) done with rendezvous
(highest-random-weight) hashing, at two levels:

* rendezvous order: every backend gets a score ``mix(key XOR hash(name))``; the backends in
  descending score are the key's preference list. It depends on nothing but the key and the
  names, so every wrapper process computes the same list; adding or removing a replica moves
  only the keys that replica wins or held.
* bounded *key* loads: with a handful of replicas and tens of tenants, hashing alone is
  uneven (15 tenants over 3 replicas: often 7/5/3, the busiest replica at 1.4x its share, its
  cache over-full while another's idles). So the prefixes active in the last ``ACTIVE_SECONDS``
  are split with the bounded-loads rule itself: each key, in the order of its own hash, goes to
  the first replica of its preference list that is the home of fewer than
  ``ceil(KEY_BALANCE * keys / replicas)`` keys. The split depends only on the set of active keys
  and the replica names, never on the order requests arrived in, so two wrapper processes that
  see the same tenants agree; a key keeps its home while the set is unchanged. Above
  ``BALANCED_PER_REPLICA`` keys a replica, hashing is even by itself and the plain first choice
  is used (no table to recompute on every new conversation).
* bounded *request* loads: the request goes to its home unless that replica has
  ``max(ceil(c * (total + 1) / n), floor)`` requests in flight from this process (c =
  ``VLLM_ROUTING_BALANCE``, 2); then to the next replica *of that key's preference list* below
  the bound -- the same overflow replica for a tenant every time, in every process, so that
  replica caches the tenant too, instead of whichever replica is least loaded (which would put
  the tenant's prompt in every cache in turn). A hot prefix therefore spills instead of
  overloading one replica. The floor (2) keeps a lone conversation's overlapping requests
  together at very low load.

benchmarks/routing_bench.py measures the effect (wrapper/routing/README.md has the figures).
"""

from __future__ import annotations

import bisect
import itertools
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Protocol

from .backends import Backend

_M64 = (1 << 64) - 1

AFFINITY = "affinity"
SPILLED = "spilled"
LEAST_LOAD = "least_load"
ROUND_ROBIN = "round_robin"
FAILOVER = "failover"

KEY_BALANCE = 1.0  # no replica is the home of more than ceil(its share) of the active prefixes
ACTIVE_SECONDS = 60.0  # a prefix not seen for this long no longer counts
BALANCED_PER_REPLICA = 64  # above this many active prefixes a replica, plain hashing is even enough
TRACKED = 4096  # at most this many prefixes remembered


def mix(x: int) -> int:
    """splitmix64's finaliser: a fixed, well-spread 64-bit permutation (same in every process)."""
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def preference(key: int, backends: Sequence[Backend]) -> list[Backend]:
    """The rendezvous order of ``backends`` for ``key`` (best first)."""
    return sorted(backends, key=lambda b: mix(key ^ b.hash), reverse=True)


class Policy(Protocol):
    name: str

    def choose(self, key: int | None, candidates: Sequence[Backend]) -> tuple[Backend, str]: ...


class RoundRobin:
    name = "round-robin"

    def __init__(self) -> None:
        self._next = itertools.count()

    def choose(self, key: int | None, candidates: Sequence[Backend]) -> tuple[Backend, str]:
        return candidates[next(self._next) % len(candidates)], ROUND_ROBIN


class LeastLoad:
    """Fewest requests in flight; ties rotate, so idle replicas share a trickle of requests."""

    name = "least-load"

    def __init__(self) -> None:
        self._next = itertools.count()

    def choose(self, key: int | None, candidates: Sequence[Backend]) -> tuple[Backend, str]:
        n = len(candidates)
        start = next(self._next) % n
        best = candidates[start]
        for i in range(1, n):
            b = candidates[(start + i) % n]
            if b.in_flight < best.in_flight:
                best = b
        return best, LEAST_LOAD


class PrefixAffinity:
    """Consistent hashing with bounded loads, at two levels (see the module docstring)."""

    name = "prefix"

    def __init__(
        self,
        balance: float = 2.0,
        floor: int = 2,
        *,
        key_balance: float = KEY_BALANCE,
        active_seconds: float = ACTIVE_SECONDS,
        balanced_per_replica: int = BALANCED_PER_REPLICA,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.balance = balance
        self.floor = floor
        self.key_balance = key_balance
        self.active_seconds = active_seconds
        self.balanced_per_replica = balanced_per_replica
        self.clock = clock
        self._fallback = LeastLoad()
        self._seen: OrderedDict[int, float] = OrderedDict()  # active key -> last seen, oldest first
        self._order: list[tuple[int, int]] = []  # (mix(key), key) of the active keys, sorted
        self._prefs: dict[int, list[Backend]] = {}  # key -> its rendezvous order over _prefs_of
        self._prefs_of: tuple[Backend, ...] = ()
        self._homes: dict[int, Backend] = {}
        self._stale = True  # the active keys or the candidates changed since _homes was computed

    def bound(self, candidates: Sequence[Backend]) -> int:
        """Requests in flight a backend may already have and still take this one."""
        total = 0
        for b in candidates:
            total += b.in_flight
        bound = math.ceil(self.balance * (total + 1) / len(candidates))
        return bound if bound > self.floor else self.floor

    # -- the active keys ---------------------------------------------------------------------
    def _touch(self, key: int) -> None:
        now = self.clock()
        seen = self._seen
        if key in seen:
            seen.move_to_end(key)
        else:
            bisect.insort(self._order, (mix(key), key))
            self._stale = True
        seen[key] = now
        horizon = now - self.active_seconds
        for oldest, last in seen.items():
            if last >= horizon and len(seen) <= TRACKED:
                break
            self._forget(oldest)
            break  # at most one per request: the expiry keeps up, and no request pays for many

    def _forget(self, key: int) -> None:
        del self._seen[key]
        entry = (mix(key), key)
        i = bisect.bisect_left(self._order, entry)
        del self._order[i]
        self._prefs.pop(key, None)
        self._stale = True

    def home(self, key: int, candidates: Sequence[Backend]) -> Backend:
        """The key's replica: its place in the bounded-load assignment of the active keys, or its
        rendezvous first choice when so many keys are active that hashing alone spreads them evenly."""
        if len(self._order) > self.balanced_per_replica * len(candidates):
            return max(candidates, key=lambda b: mix(key ^ b.hash))
        # The pool hands out the same tuple while the rotation is unchanged: one identity test
        # on the common path, the element-wise comparison only for another sequence.
        if self._stale or (
            candidates is not self._prefs_of
            and (
                len(candidates) != len(self._prefs_of)
                or any(a is not b for a, b in zip(candidates, self._prefs_of, strict=True))
            )
        ):
            self._assign(tuple(candidates))
        return self._homes[key]

    def _assign(self, candidates: tuple[Backend, ...]) -> None:
        """Each active key, in the order of its own hash (so the result depends only on the set
        of keys and the replica names, never on the order they arrived in), goes to the first
        replica of its rendezvous order that is the home of fewer than
        ceil(key_balance * keys / replicas) keys so far."""
        if candidates != self._prefs_of:
            self._prefs.clear()
            self._prefs_of = candidates
        prefs = self._prefs
        cap = max(1, math.ceil(self.key_balance * len(self._order) / len(candidates)))
        count = dict.fromkeys(map(id, candidates), 0)
        homes: dict[int, Backend] = {}
        for _, key in self._order:
            order = prefs.get(key)
            if order is None:
                order = prefs[key] = preference(key, candidates)
            for b in order:
                if count[id(b)] < cap:
                    count[id(b)] += 1
                    homes[key] = b
                    break
        self._homes = homes
        self._stale = False

    def choose(self, key: int | None, candidates: Sequence[Backend]) -> tuple[Backend, str]:
        if key is None:  # nothing to be affine to (GET /v1/models, an empty prompt)
            return self._fallback.choose(None, candidates)
        if len(candidates) == 1:
            return candidates[0], AFFINITY
        self._touch(key)
        home = self.home(key, candidates)
        if home.in_flight < self.floor:  # the bound is never below the floor: no need to sum the loads
            return home, AFFINITY
        bound = self.bound(candidates)
        if home.in_flight < bound:  # the common case
            return home, AFFINITY
        for b in preference(key, candidates):  # the spill order: the key's own rendezvous order
            if b is not home and b.in_flight < bound:
                return b, SPILLED
        return min(candidates, key=lambda b: b.in_flight), SPILLED  # unreachable: someone is at or below the mean


def make_policy(name: str, balance: float = 2.0) -> Policy:
    if name == "prefix":
        return PrefixAffinity(balance)
    if name == "least-load":
        return LeastLoad()
    if name == "round-robin":
        return RoundRobin()
    raise ValueError(f"unknown routing policy {name!r}")


__all__ = [
    "AFFINITY",
    "FAILOVER",
    "LEAST_LOAD",
    "ROUND_ROBIN",
    "SPILLED",
    "LeastLoad",
    "Policy",
    "PrefixAffinity",
    "RoundRobin",
    "make_policy",
    "mix",
    "preference",
]
