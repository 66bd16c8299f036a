"""End to end on this machine: two real wrapper processes (``python -m wrapper``) + the loopback
fake API server + a real OpenAI-compatible upstream process that the test STARTS when the
StatefulSet goes to 1 replica and STOPS when it goes to 0 (readyReplicas follows it), with a
3-second idle timeout."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.scaling.fake_apiserver import MERGE, FakeAPIServer
from tests.wrapper._wrapper_servers import Proc, Wrapper, free_port
from wrapper.scaling.policy import ANNOTATION, parse_wall

NS, NAME, KEY = "vllm-dev", "vllm", "e2e-upstream-key"
STS = f"/apis/apps/v1/namespaces/{NS}/statefulsets/{NAME}"
LEASE = f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/{NAME}-activity"
UPSTREAM = Path(__file__).resolve().parents[1] / "wrapper" / "upstream_faults.py"
IDLE = 3.0
LOAD_SECONDS = 1.0  # how long the "model" takes to load after the pod is scheduled
MSG = [{"role": "user", "content": "hello there"}]


class Pod:
    """vLLM's pod: a real upstream process on a fixed port, started and stopped by replicas."""

    def __init__(self, api: FakeAPIServer) -> None:
        self.api = api
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.proc: Proc | None = None
        self.starts = 0
        self.stops = 0
        self.lock = threading.Lock()

    def on_replicas(self, old: int, new: int) -> None:
        with self.lock:
            if new >= 1 and self.proc is None:
                time.sleep(LOAD_SECONDS)
                self.proc = Proc([sys.executable, str(UPSTREAM), "--port", str(self.port),
                                  "--api-key", KEY], self.port, ready="/_stats")
                self.starts += 1
                self.api.set_ready(1)  # the readiness probe passes
            elif new == 0 and self.proc is not None:
                self.proc.stop()
                self.proc = None
                self.stops += 1
                self.api.set_ready(0)

    @property
    def running(self) -> bool:
        return self.proc is not None

    def stop(self) -> None:
        with self.lock:
            if self.proc is not None:
                self.proc.stop()
                self.proc = None


def wait_for(cond, timeout: float, what: str, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def metric(w: Wrapper, name: str) -> float:
    for line in httpx.get(w.url + "/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def state(w: Wrapper) -> str:
    return httpx.get(w.url + "/health", timeout=5).json().get("scale_state")


@pytest.fixture
def cluster():
    api = FakeAPIServer(NS, NAME, replicas=0, ready=0).start()
    pod = Pod(api)
    api.on_replicas = pod.on_replicas
    wrappers: list[Wrapper] = []

    def wrapper(**settings) -> Wrapper:
        w = Wrapper(pod.base_url, api_key=KEY, idle_timeout=IDLE, k8s_namespace=NS, k8s_statefulset=NAME,
                    k8s_api_url=api.url, timeout=10, health_cache_seconds=0, retry_backoff=0.05, **settings)
        wrappers.append(w)
        return w

    try:
        yield api, pod, wrapper
    finally:
        for w in wrappers:
            w.stop()
        api.stop()
        pod.stop()


def test_requests_wake_the_gpu_are_held_and_served_and_idle_puts_it_back_to_zero(cluster) -> None:
    api, pod, wrapper = cluster
    a = wrapper(wake_timeout=90)  # holds requests while vLLM wakes
    b = wrapper(wake_timeout=0)  # answers 503 + Retry-After at once (and still wakes it)
    wait_for(lambda: state(a) == state(b) == "scaled_to_zero", 10, "both wrappers to see zero replicas")
    assert httpx.get(a.url + "/health").json()["vllm_available"] is False
    rss_kb = int(next(x for x in Path(f"/proc/{a.pid}/status").read_text().splitlines() if x.startswith("VmRSS")).split()[1])
    assert rss_kb < 100 * 1024  # the scaler adds no client library: the wrapper stays small
    assert not pod.running

    # 1. A request on a sleeping GPU is held through the wake and served.
    api.requests.clear()
    t0 = time.monotonic()
    r = httpx.post(a.base_url + "/chat/completions", json={"model": "fake-echo", "messages": MSG}, timeout=120)
    held = time.monotonic() - t0
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "hello there"
    assert held >= LOAD_SECONDS and pod.starts == 1
    patches = [x for x in api.requests if x.method == "PATCH"]
    # Activity is published first, then one scale-up; while the request is held the wrapper
    # keeps publishing activity at the bounded rate (so no replica can scale a loading pod down).
    assert [(p.path, p.content_type) for p in patches[:2]] == [(LEASE, MERGE), (STS + "/scale", MERGE)]
    assert patches[0].body["metadata"]["annotations"][ANNOTATION]
    assert patches[1].body["spec"] == {"replicas": 1}
    assert [p.path for p in patches[2:]] == [LEASE] * len(patches[2:])  # the StatefulSet is never written
    # (a 409 is a stale resourceVersion retried at once: the pod's status updates cause them)
    assert len([p for p in patches[2:] if p.status == 200]) <= held / (IDLE / 4) + 1
    assert {p.status for p in patches} <= {200, 409}
    assert all(p.query == {"fieldManager": "vllm-wrapper"} for p in patches)
    assert state(a) == "ready"
    wait_for(lambda: httpx.get(a.url + "/health").json()["vllm_available"], 5, "/health to see vLLM")
    assert metric(a, "vllm_wrapper_scale_wakes_total") == 1
    assert metric(a, "vllm_wrapper_scale_wake_duration_seconds_count") == 1
    assert metric(a, "vllm_wrapper_scale_wake_duration_seconds_sum") >= LOAD_SECONDS

    # 2. Traffic on wrapper a only, for longer than the idle timeout: b sees none, yet the
    #    shared activity Lease keeps the GPU up (no per-pod memory decides).
    end = time.monotonic() + 1.5 * IDLE
    while time.monotonic() < end:
        last_sent = time.monotonic()
        assert httpx.post(a.base_url + "/completions", json={"model": "fake-echo", "prompt": "hi"}, timeout=10).status_code == 200
        assert api.replicas == 1
        time.sleep(0.5)
    assert pod.stops == 0 and wait_for(lambda: state(b) == "ready", 5, "b to see it ready")
    stamp = parse_wall(api.annotations[ANNOTATION])
    assert stamp is not None and abs(stamp - time.time()) < 3
    writes = [x for x in api.requests if x.method == "PATCH" and x.path == LEASE]
    # Bounded: one write per publishing interval (IDLE / 4) at most, from the one busy wrapper.
    assert {x.status for x in writes} <= {200, 409}
    assert len([x for x in writes if x.status == 200]) <= (time.monotonic() - t0) / (IDLE / 4) + 1

    # 3. Quiet: one wrapper scales it to zero after the idle timeout, and the pod goes away.
    wait_for(lambda: api.replicas == 0, IDLE + 6, "the idle scale-down")
    idle = time.monotonic() - last_sent  # activity is recorded after the request was sent
    assert IDLE - 0.05 <= idle <= IDLE + 8, idle  # upper bound: ticks + a loaded machine
    wait_for(lambda: not pod.running, 10, "the pod to stop")
    assert pod.stops == 1
    downs = [x for x in api.requests if x.method == "PATCH" and x.path.endswith("/scale") and x.status == 200]
    assert downs[-1].body["spec"] == {"replicas": 0} and "resourceVersion" in downs[-1].body["metadata"]
    wait_for(lambda: state(a) == state(b) == "scaled_to_zero", 5, "both wrappers to see zero")
    wait_for(lambda: metric(a, "vllm_wrapper_scaled_to_zero_seconds_total") > 0.2, 5, "time at zero")
    assert metric(a, "vllm_wrapper_scale_downs_total") + metric(b, "vllm_wrapper_scale_downs_total") == 1

    # 4. With holding disabled: 503 + Retry-After at once, and the wake starts anyway ...
    r = httpx.post(b.url + "/chat", json={"messages": MSG}, timeout=10)
    assert r.status_code == 503 and r.headers["retry-after"] == "10", r.text
    assert r.json()["error"]["code"] == "model_waking"
    assert pod.starts == 1  # answered before the wake it started could finish: not held
    # ... and a streamed request on the other wrapper is held until the same wake finishes.
    with httpx.stream("POST", a.base_url + "/chat/completions", timeout=120,
                      json={"model": "fake-echo", "messages": MSG, "stream": True}) as s:
        assert s.status_code == 200
        body = "".join(s.iter_text())
    assert "data: [DONE]" in body and pod.starts == 2
    ups = [x for x in api.requests if x.method == "PATCH" and x.path.endswith("/scale") and x.body["spec"] == {"replicas": 1}]
    assert len([u for u in ups if u.status == 200]) == 2  # one per wake, never two for the same wake
    assert metric(a, "vllm_wrapper_scale_wakes_total") + metric(b, "vllm_wrapper_scale_wakes_total") == 2
    wait_for(lambda: api.replicas == 0 and not pod.running, IDLE + 8, "the second idle scale-down")
    assert "Traceback" not in a.log() + b.log()
