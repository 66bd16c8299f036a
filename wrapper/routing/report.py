"""The replica list in ``/health``: what an operator needs to see which replica is out, and why."""

from __future__ import annotations

from .router import Router


def replica_report(router: Router) -> list[dict]:
    """One entry per current replica. ``ready``: in rotation and its last ``/health`` answered
    200 (None before the first probe); ``source``: ``discovered`` (EndpointSlices) or ``static``."""
    pool = router.pool
    source = "discovered" if pool.discovered else "static"
    return [
        {
            "backend": b.name,
            "url": b.base,
            "pod": b.pod,
            "source": source,
            "ready": (not b.ejected and b.healthy) if b.healthy is not None else None,
            "ejected": b.ejected,
            "in_flight": b.in_flight,
        }
        for b in pool.members
    ]


__all__ = ["replica_report"]
