"""Prefix routing's two bounds: the active prefixes split evenly over the replicas (by key count),
and a request that finds its prefix's replica full spills to the next replica of *that prefix's*
rendezvous order, so every wrapper process sends it to the same place and the overflow replica
caches that tenant too.

Pure policy objects with a fake clock, plus real separate interpreter processes for "the same
choice in two wrapper processes" (Python's str hash is salted per process; the choice must not be).
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from collections import Counter

from wrapper.routing.backends import Backend
from wrapper.routing.policy import AFFINITY, SPILLED, PrefixAffinity, preference
from wrapper.routing.prefix import chat_key

NAMES = ("vllm-0", "vllm-1", "vllm-2")


def backends(*names: str) -> list[Backend]:
    return [Backend(n, f"http://{n}/v1") for n in names]


def tenant_key(tenant: str) -> int:
    key = chat_key([{"role": "system", "content": f"You are the assistant of tenant {tenant}. " * 10}], 2048)
    assert key is not None
    return key


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def homes(policy: PrefixAffinity, keys: list[int], pool: list[Backend]) -> dict[int, str]:
    """Where each key goes at zero load, after the policy has seen all of them once."""
    for k in keys:
        policy.choose(k, pool)
    return {k: policy.choose(k, pool)[0].name for k in keys}


def uneven_tenants(n: int = 15) -> list[int]:
    """n tenant keys whose plain rendezvous first choices are uneven over NAMES (found, not assumed)."""
    pool = backends(*NAMES)
    for salt in range(1000):
        keys = [tenant_key(f"{salt}-{t}") for t in range(n)]
        if max(Counter(preference(k, pool)[0].name for k in keys).values()) >= math.ceil(n / len(pool)) + 2:
            return keys
    raise AssertionError("no uneven split in 1000 tries")


def test_the_active_prefixes_are_split_evenly_even_where_plain_hashing_is_not():
    keys = uneven_tenants()
    pool = backends(*NAMES)
    plain = Counter(preference(k, pool)[0].name for k in keys)
    balanced = Counter(homes(PrefixAffinity(clock=Clock()), keys, pool).values())
    assert max(plain.values()) >= 7  # e.g. 7/5/3: the busiest replica would take 1.4x its share
    assert sorted(balanced.values()) == [5, 5, 5]


def test_a_prefix_keeps_its_replica_while_it_is_active():
    pool = backends(*NAMES)
    policy = PrefixAffinity(clock=Clock())
    keys = uneven_tenants()
    first = homes(policy, keys, pool)
    for _ in range(5):  # later rounds of the same tenants, shuffled
        for k in random.Random(1).sample(keys, len(keys)):
            b, decision = policy.choose(k, pool)
            assert (b.name, decision) == (first[k], AFFINITY)


def test_the_split_depends_on_which_prefixes_are_active_not_on_the_order_they_came_in():
    keys = uneven_tenants()
    pool = backends(*NAMES)
    a = homes(PrefixAffinity(clock=Clock()), keys, pool)
    b = homes(PrefixAffinity(clock=Clock()), list(reversed(keys)), list(reversed(backends(*NAMES))))
    c = homes(PrefixAffinity(clock=Clock()), random.Random(7).sample(keys, len(keys)), pool)
    assert a == b == c


def test_two_wrapper_processes_make_the_same_choices():
    # Two interpreters with different str-hash salts, seeing the same tenants in different orders
    # (as two wrapper pods behind a load balancer do), route every tenant to the same replica.
    code = (
        "import json, sys\n"
        "from wrapper.routing.backends import Backend\n"
        "from wrapper.routing.policy import PrefixAffinity\n"
        "keys, names = json.loads(sys.argv[1]), json.loads(sys.argv[2])\n"
        "pool = [Backend(n, 'http://' + n + '/v1') for n in names]\n"
        "p = PrefixAffinity()\n"
        "for k in keys: p.choose(k, pool)\n"
        "print(json.dumps({k: p.choose(k, pool)[0].name for k in sorted(keys)}))\n"
    )
    keys = uneven_tenants()
    answers = []
    for seed, order, names in (("1", keys, NAMES), ("2", keys[::-1], NAMES[::-1])):
        out = subprocess.run(
            [sys.executable, "-c", code, json.dumps(order), json.dumps(names)],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        answers.append(json.loads(out))
    assert answers[0] == answers[1]
    assert sorted(Counter(answers[0].values()).values()) == [5, 5, 5]


def test_a_full_replica_spills_to_the_next_choice_of_that_prefix_every_time():
    pool = backends(*NAMES)
    policy = PrefixAffinity(balance=1.25, floor=2, clock=Clock())
    key = tenant_key("hot")
    home = policy.choose(key, pool)[0]
    second, third = (b for b in preference(key, pool) if b is not home)
    # In flight 4 / 1 / 0: the bound is ceil(1.25 x 6 / 3) = 3, the home is over it, and the
    # least-loaded replica (where a least-load spill would go) is not the prefix's next choice.
    home.in_flight, second.in_flight, third.in_flight = 4, 1, 0
    assert policy.bound(pool) == 3
    assert [policy.choose(key, pool) for _ in range(3)] == [(second, SPILLED)] * 3
    home.in_flight, second.in_flight = 4, 4  # both full (bound 4): then its third choice
    assert policy.choose(key, pool) == (third, SPILLED)
    home.in_flight, second.in_flight = 0, 0
    assert policy.choose(key, pool) == (home, AFFINITY)


def test_two_policies_spill_a_prefix_to_the_same_replica():
    keys = uneven_tenants()
    pool_a, pool_b = backends(*NAMES), backends(*reversed(NAMES))
    a, b = PrefixAffinity(clock=Clock()), PrefixAffinity(clock=Clock())
    homes(a, keys, pool_a), homes(b, keys[::-1], pool_b)
    for k in keys:
        for pool, policy in ((pool_a, a), (pool_b, b)):
            home = policy.choose(k, pool)[0]
            home.in_flight = 10
        spill_a, spill_b = a.choose(k, pool_a), b.choose(k, pool_b)
        assert spill_a[1] == spill_b[1] == SPILLED and spill_a[0].name == spill_b[0].name
        for x in (*pool_a, *pool_b):
            x.in_flight = 0


def test_a_prefix_not_seen_for_a_while_stops_counting():
    pool = backends(*NAMES)
    clock = Clock()
    policy = PrefixAffinity(active_seconds=60, clock=clock)
    old = [tenant_key(f"old-{t}") for t in range(12)]
    new = uneven_tenants()
    homes(policy, old, pool)
    clock.now = 61.0
    for k in new:  # each request retires at most one expired prefix...
        policy.choose(k, pool)
    for k in new * 2:  # ...so by now all twelve are gone
        policy.choose(k, pool)
    assert {k: policy.choose(k, pool)[0].name for k in new} == homes(PrefixAffinity(clock=Clock()), new, pool)


def test_with_many_active_prefixes_plain_rendezvous_hashing_decides():
    pool = backends(*NAMES)
    policy = PrefixAffinity(balanced_per_replica=4, clock=Clock())
    keys = [tenant_key(f"many-{t}") for t in range(13)]  # more than 4 a replica
    for k in keys:
        policy.choose(k, pool)
    assert all(policy.choose(k, pool)[0] is preference(k, pool)[0] for k in keys)
