"""The routing choices themselves: pure functions of the prompt, the replica names and the loads."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

import pytest

from wrapper.routing.backends import Backend, Pool
from wrapper.routing.policy import AFFINITY, SPILLED, LeastLoad, PrefixAffinity, RoundRobin, preference
from wrapper.routing.prefix import chat_key, completion_key

SYSTEM = "You are the support assistant of ACME Corp. " * 40  # ~1,800 characters


def backends(*names: str) -> list[Backend]:
    return [Backend(n, f"http://{n}/v1") for n in names]


def test_every_turn_of_a_conversation_has_the_key_of_its_first_turn():
    turn1 = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi, I need help"}]
    turn3 = turn1 + [
        {"role": "assistant", "content": "Sure, with what?"},
        {"role": "user", "content": "My invoice"},
        {"role": "assistant", "content": "Which one?"},
        {"role": "user", "content": "The last one"},
    ]
    assert chat_key(turn1, 2048) == chat_key(turn3, 2048)
    other = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Something else"}]
    assert chat_key(other, 2048) != chat_key(turn1, 2048)


def test_conversations_sharing_a_long_system_prompt_share_a_key():
    a = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Question one"}]
    b = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "A different question"}]
    assert chat_key(a, 1024) == chat_key(b, 1024)
    c = [{"role": "system", "content": SYSTEM.replace("ACME", "Initech")}, {"role": "user", "content": "Question one"}]
    assert chat_key(c, 1024) != chat_key(a, 1024)


def test_a_short_system_prompt_keys_by_conversation_a_long_one_by_tenant():
    short = {"role": "system", "content": "You are a helpful assistant."}
    long = {"role": "system", "content": "x" * 300}
    q1, q2 = {"role": "user", "content": "question one"}, {"role": "user", "content": "question two"}
    assert chat_key([short, q1], 2048) != chat_key([short, q2], 2048)
    assert chat_key([long, q1], 2048) == chat_key([long, q2], 2048)


def test_content_parts_and_completion_prompts_have_keys():
    parts = [{"role": "user", "content": [{"type": "text", "text": "hello "}, {"type": "text", "text": "world"}]}]
    assert chat_key(parts, 100) == chat_key([{"role": "user", "content": "hello world"}], 100)
    assert completion_key(SYSTEM + "tail one", 1024) == completion_key(SYSTEM + "tail two", 1024)
    assert completion_key([SYSTEM, "x"], 1024) == completion_key(SYSTEM, 1024)
    assert completion_key([1, 2, 3], 1024) == completion_key([1, 2, 3, 4], 12)
    assert completion_key("", 1024) is None and chat_key("not a list", 10) is None


def test_the_key_is_the_same_in_every_process():
    # Python's hash() of a str differs per process (PYTHONHASHSEED); the routing key must not.
    code = "from wrapper.routing.prefix import chat_key; print(chat_key([{'role':'user','content':'same prompt'}], 2048))"
    seen = {
        subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": seed},
                       capture_output=True, text=True, check=True).stdout.strip()
        for seed in ("1", "2", "3")
    }
    assert seen == {str(chat_key([{"role": "user", "content": "same prompt"}], 2048))}


def test_the_choice_depends_on_the_names_not_their_order():
    a = backends("vllm-0", "vllm-1", "vllm-2")
    b = list(reversed(backends("vllm-0", "vllm-1", "vllm-2")))
    for key in range(0, 2**64, 2**58):
        assert preference(key, a)[0].name == preference(key, b)[0].name


def test_removing_a_replica_moves_only_the_keys_it_held():
    three = backends("vllm-0", "vllm-1", "vllm-2")
    two = [b for b in three if b.name != "vllm-2"]
    keys = [chat_key([{"role": "user", "content": f"tenant {i}"}], 100) for i in range(600)]
    before = {k: preference(k, three)[0].name for k in keys}
    after = {k: preference(k, two)[0].name for k in keys}
    moved = [k for k in keys if before[k] != after[k]]
    assert moved and all(before[k] == "vllm-2" for k in moved)
    spread = Counter(before.values())
    assert min(spread.values()) > 600 / 3 * 0.8  # rendezvous hashing spreads keys evenly


def test_a_hot_prefix_spills_to_its_second_choice_at_the_load_bound():
    pool = backends("vllm-0", "vllm-1", "vllm-2")
    policy = PrefixAffinity(balance=1.25, floor=2)
    key = chat_key([{"role": "system", "content": SYSTEM}], 2048)
    first, second = preference(key, pool)[:2]
    decisions = []
    for _ in range(12):  # twelve overlapping requests of one tenant, none finished yet
        b, decision = policy.choose(key, pool)
        b.in_flight += 1
        decisions.append((b.name, decision))
    assert decisions[0] == (first.name, AFFINITY) and decisions[1] == (first.name, AFFINITY)
    assert (second.name, SPILLED) in decisions
    total = sum(b.in_flight for b in pool)
    assert max(b.in_flight for b in pool) <= max(2, -(-1.25 * total // 3))  # never above c x mean (or the floor)


def test_least_load_and_round_robin():
    pool = backends("a:1", "b:1", "c:1")
    pool[0].in_flight, pool[1].in_flight, pool[2].in_flight = 3, 1, 2
    assert LeastLoad().choose(None, pool)[0].name == "b:1"
    rr = RoundRobin()
    assert [rr.choose(None, pool)[0].name for _ in range(6)] == ["a:1", "b:1", "c:1"] * 2


def test_ejection_after_consecutive_failures_and_panic_mode():
    t = [0.0]
    pool = Pool(backends("a:1", "b:1"), eject_after=2, eject_seconds=5, clock=lambda: t[0])
    a, b = pool.members
    assert not pool.failed_once(a) and pool.failed_once(a) and a.ejected
    assert list(pool.candidates()) == [b]
    assert pool.due_for_probe() == []
    t[0] = 5.0
    assert pool.due_for_probe() == [a]
    pool.failed_once(b), pool.failed_once(b)
    assert {x.name for x in pool.candidates()} == {"a:1", "b:1"}  # everyone out: try them all anyway
    pool.readmit(a)
    assert list(pool.candidates()) == [a]


def test_a_single_backend_is_never_ejected():
    pool = Pool(backends("only:1"), eject_after=1)
    for _ in range(5):
        pool.failed_once(pool.members[0])
    assert not pool.members[0].ejected


@pytest.mark.parametrize("found", [[], [("vllm-0", "http://10.0.0.1:8000/v1", "vllm-0")]])
def test_discovered_members_replace_the_static_list_and_an_empty_set_falls_back(found):
    static = backends("svc:8000")
    pool = Pool(static)
    pool.replace(found)
    assert [b.name for b in pool.members] == ([n for n, _, _ in found] or ["svc:8000"])
    assert pool.discovered is bool(found)


def test_the_candidates_follow_every_change_of_the_rotation():
    """``candidates()`` keeps its answer between requests (backends.py): joining, leaving, an
    ejection and a readmission must each show in the next answer."""
    pool = Pool(backends("svc:8000"), eject_after=1)
    assert [b.name for b in pool.candidates()] == ["svc:8000"]
    pool.replace([("vllm-0", "http://10.0.0.1:8000/v1", "vllm-0"), ("vllm-1", "http://10.0.0.2:8000/v1", "vllm-1")])
    v0, v1 = pool.members
    assert list(pool.candidates()) == [v0, v1]
    assert pool.failed_once(v0)
    assert list(pool.candidates()) == [v1]
    assert list(pool.candidates([v1])) == [v0]  # the only live one tried: the ejected one is next
    pool.readmit(v0)
    assert list(pool.candidates()) == [v0, v1]
    pool.replace([("vllm-1", "http://10.0.0.2:8000/v1", "vllm-1")])
    assert list(pool.candidates()) == [v1]
    pool.replace([])
    assert [b.name for b in pool.candidates()] == ["svc:8000"]


def test_the_prefix_home_follows_the_rotation_when_the_pool_hands_out_its_kept_candidates():
    """The policy recognises the pool's kept tuple by identity; a changed rotation is a new
    tuple, so the keys are split again over the replicas left, and back once it returns."""
    pool = Pool(backends("a:1", "b:1"), eject_after=1)
    policy = PrefixAffinity()
    keys = [chat_key([{"role": "user", "content": f"tenant {i}"}], 2048) for i in range(8)]
    before = {k: policy.choose(k, pool.candidates())[0] for k in keys}
    a, b = pool.members
    assert set(before.values()) == {a, b}
    pool.failed_once(a)
    assert {policy.choose(k, pool.candidates())[0] for k in keys} == {b}
    pool.readmit(a)
    assert {k: policy.choose(k, pool.candidates())[0] for k in keys} == before
