"""Discovery from the EndpointSlices of the headless Service, against a loopback API server that
lists and watches them as Kubernetes does (tests/scaling/fake_apiserver.py, which cites the docs).

Each "pod" is an echo replica on 127.0.0.1 with its own port, so each sits in its own slice
(ports belong to a slice; the EndpointSlice controller splits endpoints across slices freely).
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.routing._servers import FAST, Replica, Wrapper, counts, eventually
from tests.scaling.fake_apiserver import FakeAPIServer

NS = "vllm-dev"
SERVICE = "vllm-headless"


@pytest.fixture(scope="module")
def pods() -> Iterator[list[Replica]]:
    rs = [Replica() for _ in range(3)]
    try:
        yield rs
    finally:
        for r in rs:
            r.stop()


@pytest.fixture(scope="module")
def service() -> Iterator[Replica]:
    """What VLLM_BASE_URL names: the Service, the fallback while no endpoint is known."""
    r = Replica()
    try:
        yield r
    finally:
        r.stop()


@pytest.fixture
def api() -> Iterator[FakeAPIServer]:
    with FakeAPIServer(NS, "vllm") as server:
        yield server


def put(api: FakeAPIServer, pods: list[Replica], i: int, **conditions) -> None:
    api.put_slice(f"{SERVICE}-{i}", [{"address": "127.0.0.1", "pod": f"vllm-{i}", **conditions}],
                  service=SERVICE, port=pods[i].port)


def discovering(api: FakeAPIServer, service: Replica, **settings) -> Wrapper:
    return Wrapper(service.base_url, **{**FAST, "discovery": "endpointslices", "discovery_service": SERVICE,
                                        "discovery_port": "http", "k8s_api_url": api.url, "k8s_namespace": NS,
                                        "routing": "round-robin", **settings})


def ready_pods(w: Wrapper) -> list[str]:
    return [r["pod"] for r in httpx.get(w.url + "/health", timeout=5).json()["replicas"] if r["source"] == "discovered"]


def send(w: Wrapper, n: int) -> None:
    for _ in range(n):
        r = httpx.post(w.base_url + "/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}, timeout=10)
        assert r.status_code == 200, r.text


def delta(pods: list[Replica], before: list[int]) -> list[int]:
    return [a - b for a, b in zip(counts(pods), before)]


def test_ready_pods_take_requests_and_leave_when_unready_or_terminating(api, pods, service):
    put(api, pods, 0)
    put(api, pods, 1)
    w = discovering(api, service)
    try:
        eventually(lambda: ready_pods(w) == ["vllm-0", "vllm-1"], "the two ready pods are discovered")
        before = counts(pods)
        send(w, 4)
        assert delta(pods, before) == [2, 2, 0]

        put(api, pods, 1, ready=False)  # readiness probe failing
        eventually(lambda: ready_pods(w) == ["vllm-0"], "an unready pod leaves rotation")
        before = counts(pods)
        send(w, 3)
        assert delta(pods, before) == [3, 0, 0]

        put(api, pods, 2)  # a new replica became ready
        eventually(lambda: ready_pods(w) == ["vllm-0", "vllm-2"], "a new ready pod joins")
        put(api, pods, 0, terminating=True, serving=True)  # scale-down / rollout: still serving, not ready
        eventually(lambda: ready_pods(w) == ["vllm-2"], "a terminating pod leaves rotation")
        before = counts(pods)
        send(w, 3)
        assert delta(pods, before) == [0, 0, 3]
        assert api.requests[-1].query.get("watch") == "1"  # followed by a watch, not by polling
    finally:
        w.stop()


def test_no_ready_endpoint_falls_back_to_the_service_url(api, pods, service):
    put(api, pods, 0)
    w = discovering(api, service)
    try:
        eventually(lambda: ready_pods(w) == ["vllm-0"], "discovered")
        api.delete_slice(f"{SERVICE}-0")  # scaled to zero
        eventually(lambda: ready_pods(w) == [], "the pod is gone")
        before = service.stats()["requests"]
        send(w, 2)
        assert service.stats()["requests"] == before + 2
        assert httpx.get(w.url + "/health").json()["replicas"][0]["source"] == "static"
    finally:
        w.stop()


def test_a_compacted_watch_is_listed_again(api, pods, service):
    put(api, pods, 0)
    w = discovering(api, service)
    try:
        eventually(lambda: ready_pods(w) == ["vllm-0"], "discovered")
        api.expire_watches()  # the open watch ends with 410 Gone: its resourceVersion is too old
        put(api, pods, 1)
        eventually(lambda: ready_pods(w) == ["vllm-0", "vllm-1"], "relisted after 410 Gone")
        lists = [r for r in api.requests if r.path.endswith("/endpointslices") and "watch" not in r.query]
        assert len(lists) >= 2 and all(r.query["labelSelector"] == f"kubernetes.io/service-name={SERVICE}" for r in lists)
    finally:
        w.stop()


def test_without_rbac_the_wrapper_serves_through_the_service(api, pods, service):
    api.forbid |= {("list", "endpointslices"), ("watch", "endpointslices")}
    put(api, pods, 0)
    w = discovering(api, service)
    try:
        eventually(lambda: any(r.status == 403 for r in api.requests), "discovery was refused")
        before = service.stats()["requests"]
        send(w, 1)
        assert service.stats()["requests"] == before + 1
        assert "EndpointSlice discovery failed" in w.log() and "403" in w.log()
    finally:
        w.stop()
