"""The Kubernetes seam against a real HTTP(S) server on loopback that answers like the API server:
paths, verbs, patch content types, resourceVersion preconditions, Status errors, token and CA."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from pathlib import Path

import aiohttp
import pytest

from tests.scaling.fake_apiserver import MERGE, FakeAPIServer
from tests.scaling.fakes import sample
from wrapper.scaling import kube
from wrapper.scaling.gate import Scaler
from wrapper.scaling.kube import Conflict, KubeError, StatefulSetClient
from wrapper.scaling.policy import ANNOTATION, Policy, ScaleState, format_wall

NS, NAME = "vllm-dev", "vllm"
STS = f"/apis/apps/v1/namespaces/{NS}/statefulsets/{NAME}"
LEASE = f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/{NAME}-activity"


def where(path: str) -> str:
    return {STS: "sts", STS + "/scale": "scale", LEASE: "lease"}[path]


@pytest.fixture
def server():
    with FakeAPIServer(NS, NAME, replicas=1, ready=1) as s:
        yield s


def client(server: FakeAPIServer, name: str = NAME, **kw) -> StatefulSetClient:
    return StatefulSetClient(NS, name, ANNOTATION, api_url=server.url, **kw)


async def test_read_annotate_and_scale_speak_the_api_servers_language(server: FakeAPIServer) -> None:
    c = client(server)
    try:
        obs = await c.read()
        assert (obs.replicas, obs.ready_replicas, obs.activity) == (1, 1, None)
        obs2 = await c.annotate(ANNOTATION, "2026-11-23T12:00:00.000Z", obs.activity_version)
        assert obs2.activity == "2026-11-23T12:00:00.000Z" and obs2.activity_version != obs.activity_version
        assert obs2.resource_version == obs.resource_version  # the StatefulSet was not written
        assert server.annotations[ANNOTATION] == "2026-11-23T12:00:00.000Z"
        assert server.annotations["vllm-deploy/purpose"]  # a merge patch: other annotations kept
        assert ANNOTATION not in server.sts_annotations
        assert await c.scale(0, obs2.resource_version) == 0
        assert server.replicas == 0
        obs3 = await c.read()
        assert (obs3.replicas, obs3.ready_replicas) == (0, 0)  # readyReplicas omitted -> 0
    finally:
        await c.close()
    assert [(r.method, where(r.path)) for r in server.requests] == [
        ("GET", "sts"), ("GET", "lease"),  # read
        ("PATCH", "lease"), ("GET", "sts"),  # annotate: write the Lease, learn the replica count
        ("PATCH", "scale"),
        ("GET", "sts"), ("GET", "lease"),
    ]
    get1, patch1, patch2 = server.requests[0], server.requests[2], server.requests[4]
    assert (get1.content_type, get1.body) == (None, None)
    assert patch1.content_type == MERGE and patch1.query == {"fieldManager": "vllm-wrapper"}
    assert patch1.body == {"metadata": {"annotations": {ANNOTATION: "2026-11-23T12:00:00.000Z"},
                                        "resourceVersion": obs.activity_version}}
    assert patch2.content_type == MERGE and patch2.query == {"fieldManager": "vllm-wrapper"}
    assert patch2.body == {"spec": {"replicas": 0}, "metadata": {"resourceVersion": obs2.resource_version}}
    assert all(r.status == 200 for r in server.requests)


async def test_a_stale_resource_version_is_a_conflict(server: FakeAPIServer) -> None:
    c = client(server)
    try:
        obs = await c.read()
        server.touch()  # someone else wrote in between
        with pytest.raises(Conflict) as err:
            await c.scale(0, obs.resource_version)
        assert err.value.status == 409 and err.value.reason == "Conflict"
        assert "the object has been modified" in err.value.message
        server.touch(lease=True)
        with pytest.raises(Conflict):
            await c.annotate(ANNOTATION, "x", obs.activity_version)
        assert server.replicas == 1 and ANNOTATION not in server.annotations
    finally:
        await c.close()


async def test_status_errors_become_kube_errors(server: FakeAPIServer) -> None:
    missing = client(server, name="nope")
    c = client(server)
    try:
        with pytest.raises(KubeError) as err:
            await missing.read()
        assert (err.value.status, err.value.reason) == (404, "NotFound")
        assert err.value.message == 'statefulsets.apps "nope" not found'
        server.forbid.add(("patch", "statefulsets/scale"))
        with pytest.raises(KubeError) as err:
            await c.scale(0, None)
        assert (err.value.status, err.value.reason) == (403, "Forbidden")
        assert 'cannot patch resource "statefulsets/scale"' in err.value.message
        assert not isinstance(err.value, Conflict)
    finally:
        await missing.close()
        await c.close()
    gone = StatefulSetClient(NS, NAME, ANNOTATION, api_url="http://127.0.0.1:9", timeout=2)
    with pytest.raises(KubeError) as err:
        await gone.read()
    assert err.value.status == 0 and err.value.reason == "Unreachable"
    await gone.close()


async def test_the_fake_rejects_what_the_api_server_rejects(server: FakeAPIServer) -> None:
    """Fidelity of the fake: content types, bodies, replicas validation, json-patch."""
    async with aiohttp.ClientSession() as s:
        r = await s.patch(server.url + STS + "/scale", data=b'{"spec":{"replicas":1}}',
                          headers={"Content-Type": "application/json"})
        assert r.status == 415 and (await r.json())["reason"] == "UnsupportedMediaType"
        r = await s.patch(server.url + STS + "/scale", data=b'{"spec":{"replicas":-1}}',
                          headers={"Content-Type": MERGE})
        assert r.status == 422 and (await r.json())["kind"] == "Status"
        r = await s.patch(server.url + STS, data=b'{"metadata":{"annotations":{"a":"b"}}}',
                          headers={"Content-Type": "application/strategic-merge-patch+json"})
        assert r.status == 200 and (await r.json())["metadata"]["annotations"]["a"] == "b"
        r = await s.patch(server.url + STS + "/scale", data=b'[{"op":"replace","path":"/spec/replicas","value":3}]',
                          headers={"Content-Type": "application/json-patch+json"})
        scale = await r.json()
        assert r.status == 200 and scale["kind"] == "Scale" and scale["spec"]["replicas"] == 3
        assert scale["metadata"]["resourceVersion"] == server.get()["metadata"]["resourceVersion"]
        rv = scale["metadata"]["resourceVersion"]
        r = await s.patch(server.url + STS + "/scale", data=b'{"spec":{"replicas":3}}', headers={"Content-Type": MERGE})
        assert (await r.json())["metadata"]["resourceVersion"] == rv  # a no-op keeps the version
        r = await s.put(server.url + STS, data=b"{}", headers={"Content-Type": "application/json"})
        assert r.status == 405


async def test_in_cluster_config_token_rotation_and_tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pod's view: KUBERNETES_SERVICE_HOST/PORT, token, ca.crt and namespace files, HTTPS."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=kubernetes",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("token-1\n")
    (sa / "namespace").write_text(NS)
    with FakeAPIServer(NS, NAME, token="token-1", ssl_context=tls) as server:
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(server.port))
        untrusted = StatefulSetClient(None, NAME, ANNOTATION, sa_dir=sa)
        with pytest.raises(KubeError) as err:  # no ca.crt yet: the self-signed server is refused
            await untrusted.read()
        assert err.value.status == 0
        await untrusted.close()
        (sa / "ca.crt").write_text(cert.read_text())
        c = StatefulSetClient(None, NAME, ANNOTATION, sa_dir=sa)
        assert c.url == f"https://127.0.0.1:{server.port}{STS}"
        try:
            assert (await c.read()).replicas == 1
            server.token = "token-2"  # the kubelet rotated the projected token
            (sa / "token").write_text("token-2\n")
            monkeypatch.setattr(kube, "TOKEN_REFRESH_SECONDS", 0.0)
            assert (await c.read()).replicas == 1
        finally:
            await c.close()
        assert [r.authorization for r in server.requests[-4:]] == ["Bearer token-1"] * 2 + ["Bearer token-2"] * 2


async def test_the_scaler_retries_conflicts_through_the_real_client(server: FakeAPIServer) -> None:
    """Wake: a concurrent writer makes the first scale PATCH stale → 409 → GET → PATCH again."""
    with server.lock:
        server.objects[(NS, NAME)]["spec"]["replicas"] = 0
        server.objects[(NS, NAME)]["status"]["readyReplicas"] = 0
    server.on_replicas = lambda old, new: server.set_ready(new)
    s = Scaler(client(server), Policy(30), wake_timeout=5, poll=0.01)
    try:
        await s.tick()
        assert s.state == ScaleState.SCALED_TO_ZERO
        server.requests.clear()
        server.conflict_next = 1  # hits the annotation write first
        await s.admit()
        assert s.state == ScaleState.READY and server.replicas == 1
        trace = [(r.method, where(r.path), r.status) for r in server.requests]
        assert trace[:10] == [  # exact prefix
            ("GET", "sts", 200), ("GET", "lease", 200),
            ("PATCH", "lease", 409),  # activity, stale
            ("GET", "sts", 200), ("GET", "lease", 200),
            ("PATCH", "lease", 200), ("GET", "sts", 200),  # activity written
            ("PATCH", "scale", 200),  # 0 -> 1 with the StatefulSet's resourceVersion
            ("GET", "sts", 200), ("GET", "lease", 200),
        ]
        assert sample(s, "vllm_wrapper_scale_wakes_total") == 1
    finally:
        await s.stop()


def idle_scaler(server: FakeAPIServer) -> Scaler:
    s = Scaler(client(server), Policy(30), wake_timeout=5, poll=0.01)
    p = s.policy
    p.started = p._confirmed_at = p.clock.monotonic() - 60  # as if it had been watching for a minute
    with server.lock:  # and the last activity anyone published was an hour ago
        server.leases[(NS, f"{NAME}-activity")]["metadata"]["annotations"][ANNOTATION] = format_wall(p.clock.wall() - 3600)
    return s


async def test_scale_down_retries_a_conflict_and_then_sleeps(server: FakeAPIServer) -> None:
    s = idle_scaler(server)
    server.conflict_next = 1  # an unrelated write lands between our GET and our PATCH
    try:
        await s.tick()
    finally:
        await s.stop()
    trace = [(r.method, where(r.path), r.status) for r in server.requests]
    assert trace == [("GET", "sts", 200), ("GET", "lease", 200), ("PATCH", "scale", 409),
                     ("GET", "sts", 200), ("GET", "lease", 200), ("PATCH", "scale", 200),
                     ("GET", "sts", 200), ("GET", "lease", 200)]  # the re-check for a racing request
    assert server.replicas == 0 and s.state == ScaleState.SCALED_TO_ZERO


async def test_fresh_activity_written_during_a_scale_down_wakes_it_straight_back(server: FakeAPIServer) -> None:
    """Activity (Lease) and replicas (StatefulSet) are two objects, so no one precondition covers
    both (resourceVersion is per object: https://kubernetes.io/docs/reference/using-api/api-concepts/
    #resource-versions). Another wrapper replica publishes activity between our read and our
    scale-down: the re-read right after it sees the activity and wakes vLLM again."""
    s = idle_scaler(server)
    server.on_replicas = lambda old, new: server.set_ready(new)
    real_scale = s.api.scale

    async def another_replica_writes_first(replicas: int, rv: str | None) -> int:
        if replicas == 0:
            with server.lock:
                lease = server.leases[(NS, f"{NAME}-activity")]
                lease["metadata"]["annotations"][ANNOTATION] = format_wall(s.policy.clock.wall())
                lease["metadata"]["resourceVersion"] = server._next_rv()
        return await real_scale(replicas, rv)

    s.api.scale = another_replica_writes_first  # type: ignore[method-assign]
    try:
        await s.tick()
        assert s._wake is not None
        await asyncio.wait_for(s._wake, 10)
    finally:
        await s.stop()
    # Accepted writes only: the "controller" (on_replicas, in a worker thread) updates the status
    # after the scale-down, and when that lands between the wake's read and its write the write
    # gets a 409 and is retried on the fresh object, as against a real API server.
    scales = [r.body["spec"]["replicas"] for r in server.requests if where(r.path) == "scale" and r.status == 200]
    assert scales == [0, 1]
    assert server.replicas == 1 and s.state == ScaleState.READY
