"""End to end with REAL vLLM: two wrapper processes (``python -m wrapper``) autoscale a StatefulSet
on the loopback fake API server between 1 and 2 replicas; each replica is a real vLLM server
(CPU build, tiny model) that this test STARTS when ``spec.replicas`` grows and STOPS when it
shrinks, with ``readyReplicas`` following. A load step takes it from 1 to 2, the new replica
serves, the load ends and it comes back to 1 after draining, with no failed request."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from tests.autoscale.pods import Pods
from tests.scaling.fake_apiserver import FakeAPIServer
from tests.wrapper._wrapper_servers import Wrapper
from wrapper.scaling.autoscale_policy import DRAIN_ANNOTATION

NS, NAME = "vllm-dev", "vllm"
SCALE = f"/apis/apps/v1/namespaces/{NS}/statefulsets/{NAME}/scale"
LEASE = f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/{NAME}-activity"
AUTOSCALE = {
    "autoscale_min": 1,
    "autoscale_max": 2,
    "autoscale_target_in_flight": 2,
    "autoscale_window": 3,
    "autoscale_scale_down_delay": 6,
    "autoscale_drain_timeout": 30,
}
SETTINGS = {
    "timeout": 120,
    "max_retries": 3,
    "retry_backoff": 0.05,
    "eject_after": 2,
    "eject_seconds": 1,
    "health_cache_seconds": 0,
    "routing": "least-load",
}


def wait_for(cond, timeout: float, what: str, step: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Load:
    """``clients`` official OpenAI clients sending completions round-robin through the wrappers."""

    def __init__(self, wrappers: list[Wrapper], clients: int) -> None:
        self.clients = [
            openai.OpenAI(base_url=w.base_url, api_key="unused", max_retries=0, timeout=120) for w in wrappers
        ]
        self.n = clients
        self.stop_event = threading.Event()
        self.ok = 0
        self.failed: list[str] = []
        self.lock = threading.Lock()
        self.pool = ThreadPoolExecutor(clients)
        self.futures = [self.pool.submit(self._client, i) for i in range(clients)]

    def _client(self, i: int) -> None:
        c = self.clients[i % len(self.clients)]
        while not self.stop_event.is_set():
            try:
                r = c.completions.create(
                    model="tiny", prompt=f"client {i} says", max_tokens=96, extra_body={"ignore_eos": True}
                )
                assert r.choices[0].text is not None
                with self.lock:
                    self.ok += 1
            except Exception as exc:  # every failure is counted and shown
                with self.lock:
                    self.failed.append(f"{type(exc).__name__}: {exc}"[:300])

    def stop(self) -> None:
        self.stop_event.set()
        for f in self.futures:
            f.result()
        self.pool.shutdown()


def health(w: Wrapper) -> dict:
    return httpx.get(w.url + "/health", timeout=10).json()


@pytest.mark.timeout(2400)
def test_a_load_step_scales_real_vllm_from_1_to_2_and_back_with_no_failed_request(vllm_venv_installed) -> None:
    api = FakeAPIServer(NS, NAME, replicas=1, ready=0).start()
    pods = Pods(api, 2)
    wrappers: list[Wrapper] = []
    loads: list[Load] = []
    try:
        pods.on_replicas(0, 1)  # pod 0 exists before the wrappers start (a running stack)
        api.on_replicas = pods.on_replicas
        for _ in range(2):
            wrappers.append(
                Wrapper(
                    ",".join(pods.base_urls),
                    api_key=pods.servers[0].api_key,
                    k8s_namespace=NS,
                    k8s_statefulset=NAME,
                    k8s_api_url=api.url,
                    **SETTINGS,
                    **AUTOSCALE,
                )
            )
        a, b = wrappers
        wait_for(lambda: health(a)["autoscale"]["ready"] == 1, 30, "the autoscaler to read pod 0's /metrics")
        assert health(a)["autoscale"]["held_back"] == [f"127.0.0.1:{pods.ports[1]}"]  # not up: no requests

        # 1. A load step: 6 clients (target 2 in flight per replica) through both wrappers.
        load = Load(wrappers, 6)
        loads.append(load)
        step = time.monotonic()
        wait_for(lambda: api.replicas == 2, 120, "the scale-up to 2")
        decided = time.monotonic() - step  # printed below; the target is benchmarks/autoscale_bench.py's
        ups = [r for r in api.requests if r.method == "PATCH" and r.path == SCALE and r.status == 200]
        assert [u.body["spec"]["replicas"] for u in ups] == [2]  # one write, from one of the two wrappers
        wait_for(lambda: 1 in pods.ready, 1500, "pod 1 to load the model")
        wait_for(
            lambda: health(a)["autoscale"]["ready"] == 2 and not health(a)["autoscale"]["held_back"],
            30,
            "pod 1 in rotation",
        )
        served_before = pods.servers[1].metrics().get("vllm:request_success_total", 0.0)
        wait_for(
            lambda: pods.servers[1].metrics().get("vllm:request_success_total", 0.0) > served_before + 5,
            60,
            "pod 1 to serve requests",
        )
        assert api.replicas == 2  # never beyond max

        # 2. The load ends (one client keeps a trickle going): drained, then back to min.
        load.stop()
        load = Load(wrappers[:1], 1)
        loads.append(load)
        wait_for(lambda: api.replicas == 1, 120, "the scale-down to 1")
        wait_for(lambda: 1 in pods.stopped, 60, "pod 1 to stop")
        time.sleep(2)  # the trickle goes on after pod 1 is gone
        load.stop()
        patches = [r for r in api.requests if r.method == "PATCH" and r.status == 200]
        marks = [
            i
            for i, r in enumerate(patches)
            if r.path == LEASE and (r.body["metadata"].get("annotations") or {}).get(DRAIN_ANNOTATION) == "1"
        ]
        downs = [i for i, r in enumerate(patches) if r.path == SCALE and r.body["spec"]["replicas"] == 1]
        assert len(marks) == 1 and len(downs) == 1 and marks[0] < downs[0]  # drain mark first, then /scale
        events = health(a)["autoscale"]["events"] + health(b)["autoscale"]["events"]
        kinds = sorted(e["kind"] for e in events)
        assert kinds == ["down", "drain", "up"], events
        down = next(e for e in events if e["kind"] == "down")
        assert down["reason"].startswith("drained: nothing running or waiting"), down
        assert [f for x in loads for f in x.failed] == [] and all(x.ok > 0 for x in loads)
        print(
            f"\nautoscale e2e: step -> 2 requested {decided:.1f} s; pod 1 ready "
            f"{pods.ready[1] - step:.1f} s after the step; requests ok {sum(x.ok for x in loads)}"
        )
        for w in wrappers:
            assert "Traceback" not in w.log()
    finally:
        for x in loads:
            x.stop_event.set()
        for w in wrappers:
            w.stop()
        api.stop()
        pods.stop()
