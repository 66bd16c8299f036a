"""Scale-to-zero with ``vllm.replicas: 2``, end to end on this machine: a real wrapper process
routing over two real vLLM processes (CPU build, tiny model), the loopback fake API server as
the cluster, and a "StatefulSet controller" (this test) that starts both vLLM processes when
the wrapper scales the StatefulSet up and stops them when it scales it to zero.

What it proves: a request on a scaled-to-zero stack is held through the wake; the wake asks
for the configured two replicas (not one); once both are ready the wrapper routes over both;
quiet puts the whole StatefulSet back to zero, and both vLLM processes go away.

The program gives the wrapper each pod's DNS name under the headless Service
(components/manifests.py ``Names.vllm_urls``); here the two names are two loopback ports that
nothing listens on while the StatefulSet is at zero, as a pod's name resolves to nothing then.
"""

from __future__ import annotations

import secrets
import threading
import time

import httpx
import pytest

from tests.routing._servers import eventually
from tests.scaling.fake_apiserver import FakeAPIServer
from tests.support.ports import free_port
from tests.support.real_vllm import VllmServer, replica_cpus
from tests.wrapper._wrapper_servers import Wrapper

NS, NAME = "vllm-dev", "vllm"
REPLICAS = 2
IDLE = 5.0
STARTUP = 900.0  # two vLLM processes loading at once on a shared 2-core machine


class StatefulSet:
    """Pods 0..n-1: a real vLLM process each, on a fixed port, started in parallel on a scale-up
    (readyReplicas counts each one as it serves its first completion) and stopped on scale-down."""

    def __init__(self, api: FakeAPIServer, key: str) -> None:
        self.api = api
        self.key = key
        self.ports = [free_port() for _ in range(REPLICAS)]
        self.urls = [f"http://127.0.0.1:{p}/v1" for p in self.ports]
        self.pods: list[VllmServer | None] = [None] * REPLICAS
        self.scale_ups: list[int] = []
        self.lock = threading.Lock()

    def on_replicas(self, old: int, new: int) -> None:
        if new > 0:
            self.scale_ups.append(new)
            threads = [threading.Thread(target=self._start, args=(i,)) for i in range(min(new, REPLICAS))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        else:
            self.stop()
            self.api.set_ready(0)

    def _start(self, i: int) -> None:
        if self.pods[i] is not None:
            return
        pod = VllmServer("fast", startup_timeout=STARTUP, extra_args=["--enable-prefix-caching"], cpus=replica_cpus(i))
        pod.api_key = self.key
        pod.start(self.ports[i])
        with self.lock:
            self.pods[i] = pod
            self.api.set_ready(self.running)  # the readiness probe passes

    @property
    def running(self) -> int:
        return sum(p is not None and p.is_running() for p in self.pods)

    def served(self) -> list[float]:
        return [p.metrics().get("vllm:request_success_total", 0.0) if p is not None else 0.0 for p in self.pods]

    def stop(self) -> None:
        with self.lock:
            for i, p in enumerate(self.pods):
                if p is not None:
                    p.stop()
                    self.pods[i] = None


@pytest.fixture
def stack(vllm_venv_installed):
    key = secrets.token_urlsafe(16)
    api = FakeAPIServer(NS, NAME, replicas=0, ready=0).start()
    sts = StatefulSet(api, key)
    api.on_replicas = sts.on_replicas
    w = Wrapper(
        ",".join(sts.urls),
        api_key=key,
        idle_timeout=IDLE,
        k8s_namespace=NS,
        k8s_statefulset=NAME,
        k8s_api_url=api.url,
        k8s_replicas=REPLICAS,
        wake_timeout=STARTUP,
        timeout=120,
        health_cache_seconds=0,
        retry_backoff=0.05,
    )
    try:
        yield api, sts, w
    finally:
        w.stop()
        api.stop()
        sts.stop()


def chat(w: Wrapper, conversation: int) -> httpx.Response:
    msgs = [{"role": "user", "content": f"conversation {conversation}: tell me something"}]
    return httpx.post(
        w.base_url + "/chat/completions",
        timeout=STARTUP + 60,
        json={"model": "tiny", "messages": msgs, "max_tokens": 2, "temperature": 0},
    )


def ready_replicas(w: Wrapper) -> int:
    return sum(bool(r["ready"]) for r in httpx.get(w.url + "/health", timeout=5).json()["replicas"])


@pytest.mark.timeout(2 * STARTUP)  # the wake and the second replica's load, on a shared 2-core box
def test_a_wake_brings_back_both_replicas_the_wrapper_routes_over_both_and_quiet_scales_all_to_zero(stack):
    api, sts, w = stack
    eventually(
        lambda: httpx.get(w.url + "/health", timeout=5).json().get("scale_state") == "scaled_to_zero",
        "the wrapper to see zero replicas",
    )
    assert sts.running == 0

    # 1. A request on the sleeping stack is held through the wake and served.
    r = chat(w, 0)
    assert r.status_code == 200, r.text
    assert sts.scale_ups == [REPLICAS]  # one wake, to the configured replicas
    assert [x.body["spec"] for x in api.requests if x.method == "PATCH" and x.path.endswith("/scale")] == [
        {"replicas": REPLICAS}
    ]

    # 2. Both replicas come up (the request above may have been released by the first one);
    #    traffic meanwhile keeps the stack awake, and then both of them serve.
    def both_ready() -> bool:
        assert chat(w, 0).status_code == 200
        return sts.running == REPLICAS and ready_replicas(w) == REPLICAS

    eventually(both_ready, "both replicas ready and in the wrapper's rotation", timeout=STARTUP)
    before = sts.served()
    assert all(chat(w, c).status_code == 200 for c in range(1, 13))  # twelve conversations: prefix routing spreads them
    after = sts.served()
    assert all(a > b for a, b in zip(after, before, strict=True)), (before, after)

    # 3. Quiet: the idle timeout scales the StatefulSet to zero and both processes stop.
    last = time.monotonic()
    eventually(lambda: api.replicas == 0, "the idle scale-down", timeout=IDLE + 30)
    assert time.monotonic() - last >= IDLE - 0.5
    eventually(lambda: sts.running == 0, "both vLLM processes to stop", timeout=60)
    eventually(
        lambda: httpx.get(w.url + "/health", timeout=5).json().get("scale_state") == "scaled_to_zero",
        "the wrapper to see zero again",
    )
    assert "Traceback" not in w.log()
