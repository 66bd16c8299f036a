"""Routing policies: pure choices among candidate backends (no I/O, no clock).

``prefix`` is consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam, "Consistent
Hashing with Bounded Loads", 2016; HAProxy's ``hash-balance-factor``), done with rendezvous
(highest-random-weight) hashing rather than a ring of virtual nodes:

* every backend gets a score ``mix(key XOR hash(name))``; the backends in descending score are
  the key's preference list. It depends on nothing but the key and the names, so every wrapper
  process computes the same list without talking to the others; adding or removing a replica
  moves only the keys that replica wins or held (1/n of them), which keeps other replicas'
  caches warm; no virtual-node count to tune for an even spread over a handful of replicas.
* bounded loads: the request goes to the first backend on that list whose requests in flight
  (from this wrapper process) are below ``max(ceil(c * (total + 1) / n), floor)``, c =
  ``VLLM_ROUTING_BALANCE`` (2; benchmarks/routing_bench.py, 15 tenants over 3 replicas: c =
  1.25 reached 0.76 of an ideal partition's hit rate, c = 2 0.87 with the busiest replica at
  1.2x the mean share; c >= n never spills). A hot prefix therefore spills to its second choice (which
  then warms a cache for it too) instead of overloading one replica, and no replica carries
  more than about c times the mean. The floor (2) keeps a lone conversation's overlapping
  requests together at very low load, where spreading them buys nothing and costs a prefill.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Protocol

from .backends import Backend

_M64 = (1 << 64) - 1

AFFINITY = "affinity"
SPILLED = "spilled"
LEAST_LOAD = "least_load"
ROUND_ROBIN = "round_robin"
FAILOVER = "failover"


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
    name = "prefix"

    def __init__(self, balance: float = 2.0, floor: int = 2) -> None:
        self.balance = balance
        self.floor = floor
        self._fallback = LeastLoad()

    def bound(self, candidates: Sequence[Backend]) -> int:
        """Requests in flight a backend may already have and still take this one."""
        total = 0
        for b in candidates:
            total += b.in_flight
        return max(math.ceil(self.balance * (total + 1) / len(candidates)), self.floor)

    def choose(self, key: int | None, candidates: Sequence[Backend]) -> tuple[Backend, str]:
        if key is None:  # nothing to be affine to (GET /v1/models, an empty prompt)
            return self._fallback.choose(None, candidates)
        if len(candidates) == 1:
            return candidates[0], AFFINITY
        bound = self.bound(candidates)
        first = max(candidates, key=lambda b: mix(key ^ b.hash))
        if first.in_flight < bound:  # the common case: no sort
            return first, AFFINITY
        ranked = preference(key, candidates)
        for i, b in enumerate(ranked):
            if b.in_flight < bound:
                return b, AFFINITY if i == 0 else SPILLED
        return min(ranked, key=lambda b: b.in_flight), SPILLED  # unreachable: someone is at or below the mean


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
