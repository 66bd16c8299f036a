"""The one hook the autoscaler has in the router: replicas held back take no new request while
another one can, and are still tried as a last resort (a failover never ends in 'no replica')."""

from __future__ import annotations

from wrapper.routing.backends import Backend, Pool
from wrapper.routing.policy import make_policy
from wrapper.routing.router import Router


def router(policy: str) -> Router:
    names = ["vllm-0:8000", "vllm-1:8000", "vllm-2:8000"]
    return Router(Pool([Backend(n, f"http://{n}/v1") for n in names]), make_policy(policy))


def test_held_back_replicas_take_nothing_new_under_every_policy() -> None:
    for policy in ("prefix", "least-load", "round-robin"):
        r = router(policy)
        r.held_back = frozenset({"vllm-2:8000"})
        picks = [r.pick(key) for key in range(200)]
        assert {b.name for b in picks if b is not None} == {"vllm-0:8000", "vllm-1:8000"}, policy
        assert "failover" not in r.decisions  # holding back is not a failure


def test_a_held_back_replica_is_the_last_resort_of_a_failover() -> None:
    r = router("least-load")
    r.held_back = frozenset({"vllm-1:8000", "vllm-2:8000"})
    first = r.pick(None)
    assert first is not None and first.name == "vllm-0:8000"
    second = r.pick(None, [first])  # vllm-0 failed this request: better a held-back replica than none
    assert second is not None and second.name in {"vllm-1:8000", "vllm-2:8000"}
    r.held_back = frozenset()
    assert {r.pick(None).name for _ in range(30)} == {"vllm-0:8000", "vllm-1:8000", "vllm-2:8000"}
