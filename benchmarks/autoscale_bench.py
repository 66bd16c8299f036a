"""Autoscaling under a load step, with real vLLM (CPU build, tiny model): prints, second by second,
the StatefulSet's replicas (requested / ready), vLLM's queue (running, waiting: summed from every
live pod's /metrics) and the TTFT of the streamed requests that started in that second; then the
time from the step to each replica being requested and ready, and the scale-down after the load.

The cluster is the loopback fake API server of tests/scaling; each pod is a real vLLM server that
starts when ``spec.replicas`` grows (tests/autoscale/pods.py). Not a test: it prints figures.

    flock /work/wt/heavy.lock .venv/bin/python benchmarks/autoscale_bench.py --clients 6 --step-seconds 150
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.autoscale.pods import Pods  # noqa: E402
from tests.scaling.fake_apiserver import FakeAPIServer  # noqa: E402
from tests.support.real_vllm import parse_metrics  # noqa: E402
from tests.wrapper._wrapper_servers import Wrapper  # noqa: E402

NS, NAME = "vllm-bench", "vllm"


class Clients:
    """Closed-loop clients, each streaming completions through the wrapper; records (start, TTFT)."""

    def __init__(self, url: str, n: int, max_tokens: int) -> None:
        self.url = url + "/v1/completions"
        self.max_tokens = max_tokens
        self.stop = threading.Event()
        self.samples: list[tuple[float, float]] = []
        self.failed = 0
        self.lock = threading.Lock()
        self.pool = ThreadPoolExecutor(n)
        self.futures = [self.pool.submit(self._run, i) for i in range(n)]

    def _run(self, i: int) -> None:
        body = {
            "model": "tiny",
            "prompt": f"client {i} says",
            "max_tokens": self.max_tokens,
            "stream": True,
            "ignore_eos": True,
        }
        with httpx.Client(timeout=300) as client:
            while not self.stop.is_set():
                t0 = time.monotonic()
                ttft = None
                try:
                    with client.stream("POST", self.url, json=body) as r:
                        if r.status_code != 200:
                            raise httpx.HTTPStatusError("status", request=r.request, response=r)
                        for line in r.iter_lines():
                            if ttft is None and line.startswith("data: {"):
                                ttft = time.monotonic() - t0
                    with self.lock:
                        self.samples.append((t0, ttft if ttft is not None else float("nan")))
                except httpx.HTTPError:
                    with self.lock:
                        self.failed += 1

    def close(self) -> None:
        self.stop.set()
        for f in self.futures:
            f.result()
        self.pool.shutdown()


def queue(pods: Pods) -> tuple[float, float]:
    running = waiting = 0.0
    for s in pods.servers:
        if s.is_running():
            try:
                m = parse_metrics(httpx.get(s.root_url + "/metrics", timeout=2).text)
            except httpx.HTTPError:
                continue
            running += m.get("vllm:num_requests_running", 0.0)
            waiting += m.get("vllm:num_requests_waiting", 0.0)
    return running, waiting


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--replicas", type=int, default=2, help="max replicas (min is 1)")
    ap.add_argument("--clients", type=int, default=6, help="concurrent clients during the step")
    ap.add_argument("--target", type=float, default=2.0, help="targetInFlight")
    ap.add_argument("--window", type=int, default=3)
    ap.add_argument("--scale-down-delay", type=int, default=10)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--step-seconds", type=float, default=150, help="load after the last replica is ready")
    args = ap.parse_args()

    api = FakeAPIServer(NS, NAME, replicas=1, ready=0).start()
    pods = Pods(api, args.replicas)
    wrapper = None
    clients = None
    try:
        print(f"starting pod 0 (vLLM CPU build, tiny model) and the wrapper; max {args.replicas} replicas ...")
        pods.on_replicas(0, 1)
        api.on_replicas = pods.on_replicas
        wrapper = Wrapper(
            ",".join(pods.base_urls),
            api_key=pods.servers[0].api_key,
            k8s_namespace=NS,
            k8s_statefulset=NAME,
            k8s_api_url=api.url,
            timeout=300,
            health_cache_seconds=0,
            routing="least-load",
            autoscale_min=1,
            autoscale_max=args.replicas,
            autoscale_target_in_flight=args.target,
            autoscale_window=args.window,
            autoscale_scale_down_delay=args.scale_down_delay,
        )
        time.sleep(2)
        print(f"load step: {args.clients} streaming clients, target {args.target:g} in flight per replica")
        print(f"{'t/s':>5} {'replicas':>8} {'ready':>5} {'running':>7} {'waiting':>7} {'ttft p50/ms':>11} {'n':>3}")
        step = time.monotonic()
        clients = Clients(wrapper.url, args.clients, args.max_tokens)
        ended: float | None = None
        last = step
        while True:
            time.sleep(max(0.0, last + 1.0 - time.monotonic()))
            now = time.monotonic()
            running, waiting = queue(pods)
            with clients.lock:
                window = [ttft for t0, ttft in clients.samples if last <= t0 < now and ttft == ttft]
            p50 = f"{statistics.median(window) * 1000:.0f}" if window else "-"
            ready = api.get()["status"].get("readyReplicas", 0)  # pods that served their first completion
            print(
                f"{now - step:5.0f} {api.replicas:8d} {ready:5d} {running:7.0f} {waiting:7.0f} {p50:>11} {len(window):3d}"
            )
            last = now
            if (
                ended is None
                and len(pods.ready) >= args.replicas
                and now - max(pods.ready.values()) >= args.step_seconds
            ):
                clients.close()
                ended = now
                print("load ends")
            if ended is not None and api.replicas == 1 and len(pods.stopped) >= args.replicas - 1:
                break
            if now - step > 1800:
                print("gave up after 30 min")
                break
        print()
        for i in sorted(pods.requested):
            if i == 0:
                continue
            req, rdy = pods.requested[i] - step, pods.ready.get(i)
            print(
                f"replica {i}: requested {req:.1f} s after the step, ready {'-' if rdy is None else f'{rdy - step:.1f}'} s"
                f" (cold start {'-' if rdy is None else f'{rdy - pods.requested[i]:.1f}'} s)"
            )
        if ended is not None:
            for i, t in sorted(pods.stopped.items()):
                print(
                    f"replica {i}: removed {t - ended:.1f} s after the load ended (scale-down delay {args.scale_down_delay} s)"
                )
        print(f"failed requests: {clients.failed}")
        return 0 if clients.failed == 0 else 1
    finally:
        if clients is not None:
            clients.stop.set()
        if wrapper is not None:
            wrapper.stop()
        api.stop()
        pods.stop()


if __name__ == "__main__":
    sys.exit(main())
