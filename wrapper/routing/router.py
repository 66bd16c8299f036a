"""The router: pool + policy + the prober that lets ejected replicas back in.

``Upstream`` (wrapper/upstream.py) asks :meth:`Router.pick` for a backend before every attempt,
passing the backends it already tried for this request; it reports each attempt's outcome
(:meth:`Router.answered`, :meth:`Router.failed`) and releases the in-flight slot when the
upstream connection is released (the body read, the stream closed).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from .backends import Backend, Pool
from .policy import FAILOVER, Policy

if TYPE_CHECKING:
    from .discovery import EndpointSliceDiscovery

log = logging.getLogger("wrapper.routing")

Probe = Callable[[Backend], Awaitable[bool]]


class Router:
    def __init__(self, pool: Pool, policy: Policy, *, probe_interval: float = 1.0) -> None:
        self.pool = pool
        self.policy = policy
        self.probe_interval = probe_interval
        self.decisions: dict[str, int] = {}
        self.discovery: EndpointSliceDiscovery | None = None  # a started watcher, stopped with the router
        self._prober: asyncio.Task[None] | None = None
        # The autoscaler's hook (wrapper/scaling/autoscale.py): names of replicas that take no new
        # requests (being drained before a scale-down, or not up yet); used only when nothing else is left.
        self.held_back: frozenset[str] = frozenset()

    # -- the hot path ------------------------------------------------------------------------
    def pick(self, key: int | None, tried: Sequence[Backend] = ()) -> Backend | None:
        """The backend for the next attempt (its in-flight count taken); None when every
        candidate was tried already."""
        members = self.pool.members
        if len(members) == 1 and not tried:  # one backend: no choice to make, nothing to count
            b = members[0]
        else:
            candidates = self._candidates(tried)
            if not candidates:
                return None
            b, decision = self.policy.choose(key, candidates)
            if tried:
                decision = FAILOVER
            self.decisions[decision] = self.decisions.get(decision, 0) + 1
        b.in_flight += 1
        b.requests += 1
        return b

    def _candidates(self, tried: Sequence[Backend]) -> Sequence[Backend]:
        if self.held_back:
            held = [b for b in self.pool.members if b.name in self.held_back]
            if held:
                # A replica held back takes a request only when every other one was tried.
                return self.pool.candidates((*tried, *held)) or self.pool.candidates(tried)
        return self.pool.candidates(tried)

    def answered(self, b: Backend) -> None:
        if b.failures:
            self.pool.succeeded(b)

    def failed(self, b: Backend, reason: str, *, attempt: bool = True) -> None:
        if self.pool.failed_once(b, attempt=attempt):
            log.warning(
                "replica ejected",
                extra={"backend": b.name, "failures": b.failures, "seconds": self.pool.eject_seconds, "reason": reason},
            )

    # -- the prober --------------------------------------------------------------------------
    def start(self, probe: Probe) -> None:
        self._probe = probe
        self._prober = asyncio.ensure_future(self._probe_loop())

    async def stop(self) -> None:
        stop = getattr(self.discovery, "stop", None)
        if stop is not None:
            await stop()
        if self._prober is not None:
            self._prober.cancel()
            try:
                await self._prober
            except (asyncio.CancelledError, Exception):
                pass
            self._prober = None

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(self.probe_interval)
            members = self.pool.members
            # Several replicas: every one, every second (active readiness); one: only when
            # ejected, as the single-backend wrapper always did (there is nothing to route around).
            due = self.pool.due_for_probe()
            if len(members) > 1:
                due = [b for b in members if not b.ejected] + due
            if due:
                await self.probe(due)

    async def probe(self, backends: Iterable[Backend]) -> list[bool]:
        """Probe ``/health`` of each backend at once. An ejected one that answers 200 is back in
        rotation; a failed probe of one in rotation counts towards its ejection, as a failed
        request does (a passing probe does not clear failed requests: /health can pass while
        requests fail)."""
        backends = list(backends)
        results = await asyncio.gather(*(self._probe(b) for b in backends), return_exceptions=True)
        out = []
        for b, ok in zip(backends, results, strict=False):
            ok = ok is True
            b.healthy = ok
            if ok and b.ejected:
                self.pool.readmit(b)
                log.info("replica back in rotation", extra={"backend": b.name})
            elif not ok and not b.ejected:
                self.failed(b, "health probe failed", attempt=False)
            out.append(ok)
        return out


__all__ = ["Probe", "Router"]
