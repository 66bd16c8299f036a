"""Wake from zero with real vLLM (CPU build, tiny model): what the wrapper adds to the first request
beyond the pod's own start (process start and model load, up to its first completion).

The cluster is the loopback fake API server of tests/scaling; pod 0 is a real vLLM server started
when the wrapper scales the StatefulSet from 0 to 1 and stopped when the idle timeout scales it back
(tests/autoscale/pods.py). Each round sends one request to the sleeping stack and splits its time:

    answer time = (request -> /scale patched) + (pod start + model load) + (pod ready -> answer)

and the wrapper's share is the first and last terms, less the time the warm pod itself takes to
answer the same request directly. The brief's target: at most 1 s. Not a test: it prints figures.

    flock /work/wt/heavy.lock .venv/bin/python benchmarks/wake_bench.py --rounds 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.autoscale.pods import Pods  # noqa: E402
from tests.scaling.fake_apiserver import FakeAPIServer  # noqa: E402
from tests.wrapper._wrapper_servers import Wrapper  # noqa: E402

NS, NAME = "vllm-bench", "vllm"
BODY = {"model": "tiny", "messages": [{"role": "user", "content": "wake up"}], "max_tokens": 4, "temperature": 0}
TARGET_SECONDS = 1.0


def wait_for(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")


def scale_state(w: Wrapper) -> str | None:
    return httpx.get(w.url + "/health", timeout=10).json().get("scale_state")


def direct_seconds(base_url: str, key: str, n: int = 5) -> float:
    """The warm pod's own time for the request, without the wrapper (median of ``n``)."""
    times = []
    with httpx.Client(timeout=60, headers={"Authorization": f"Bearer {key}"}) as c:
        for _ in range(n):
            t = time.monotonic()
            c.post(base_url + "/chat/completions", json=BODY).raise_for_status()
            times.append(time.monotonic() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2, help="wakes to measure")
    ap.add_argument("--idle-timeout", type=float, default=5.0, help="VLLM_IDLE_TIMEOUT between rounds")
    a = ap.parse_args()

    api = FakeAPIServer(NS, NAME, replicas=0, ready=0).start()
    pods = Pods(api, 1)
    api.on_replicas = pods.on_replicas
    key = pods.servers[0].api_key
    w = Wrapper(
        pods.base_urls[0],
        api_key=key,
        idle_timeout=a.idle_timeout,
        k8s_namespace=NS,
        k8s_statefulset=NAME,
        k8s_api_url=api.url,
        wake_timeout=900,
        timeout=120,
        health_cache_seconds=0,
    )
    rows = []
    try:
        answered = 0.0
        for n in range(1, a.rounds + 1):
            # At zero, and the "controller" done stopping the last pod: its next hook is the wake's.
            wait_for(lambda since=answered: scale_state(w) == "scaled_to_zero" and pods.stopped.get(0, 0.0) >= since, 120,
                     "the stack to be at zero")
            t0 = time.monotonic()
            r = httpx.post(w.base_url + "/chat/completions", json=BODY, timeout=960)
            answered = time.monotonic()
            if r.status_code != 200:
                raise SystemExit(f"round {n}: HTTP {r.status_code} {r.text[:300]}")
            requested, ready = pods.requested[0], pods.ready[0]
            own = direct_seconds(pods.base_urls[0], key)
            to_patch = requested - t0
            load = ready - requested
            after_ready = answered - ready
            added = to_patch + max(after_ready - own, 0.0)
            rows.append((n, answered - t0, to_patch, load, after_ready, own, added))
            print(f"round {n}: answer {answered - t0:.2f} s = to /scale {to_patch:.3f} s + pod start and model "
                  f"load {load:.2f} s + ready to answer {after_ready:.3f} s (the warm pod alone: {own:.3f} s)",
                  flush=True)
    finally:
        w.stop()
        api.stop()
        pods.stop()

    print()
    print(f"{'round':>5} {'answer s':>9} {'to /scale s':>12} {'pod start+load s':>17} {'ready->answer s':>16} "
          f"{'warm pod s':>11} {'wrapper adds s':>15}")
    for n, total, to_patch, load, after_ready, own, added in rows:
        print(f"{n:>5} {total:>9.2f} {to_patch:>12.3f} {load:>17.2f} {after_ready:>16.3f} {own:>11.3f} {added:>15.3f}")
    worst = max(row[-1] for row in rows)
    verdict = "met" if worst <= TARGET_SECONDS else "NOT met"
    print(f"\nwake adds at most {worst:.3f} s beyond pod start + model load (target <= {TARGET_SECONDS:g} s): {verdict}")


if __name__ == "__main__":
    main()
