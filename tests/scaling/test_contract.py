"""The deployment and the wrapper agree: the env the Kubernetes manifests give the wrapper is
what its settings read, and every API call the scaler makes is allowed by the Role — nothing
else is granted. (Tests may import components/; wrapper/ never does.)"""

from __future__ import annotations

import pytest

from components import manifests
from components.plan import serving_plan
from components.stackfile import load_stack
from tests.scaling.fake_apiserver import FakeAPIServer
from wrapper.scaling.gate import Scaler
from wrapper.scaling.kube import StatefulSetClient
from wrapper.scaling.policy import ANNOTATION, Policy, ScaleState
from wrapper.settings import load_settings


def test_the_dev_stack_env_configures_the_scaler_and_prod_leaves_it_off() -> None:
    dev = {e["name"]: e.get("value") for e in manifests.wrapper_env(load_stack("dev"), serving_plan(load_stack("dev"))) if "value" in e}
    s = load_settings(**{k.removeprefix("VLLM_").lower(): v for k, v in dev.items() if k.startswith("VLLM_")})
    assert s.idle_timeout == 900 and s.wake_timeout > 0
    assert (s.k8s_namespace, s.k8s_statefulset) == (dev["VLLM_K8S_NAMESPACE"], dev["VLLM_K8S_STATEFULSET"])
    prod = {e["name"] for e in manifests.wrapper_env(load_stack("prod"), serving_plan(load_stack("prod")))}
    assert "VLLM_IDLE_TIMEOUT" not in prod and load_settings().idle_timeout == 0


async def test_every_call_the_scaler_makes_is_granted_by_the_role() -> None:
    """RBAC by resourceNames, as the API server's authorizer matches it (get/patch on a named
    object and its subresource: https://kubernetes.io/docs/reference/access-authn-authz/rbac/
    #referring-to-resources). No patch on the StatefulSet itself: it could rewrite the pod template."""
    config = load_stack("dev")
    n = manifests.names(config)
    scaler_objects = manifests.scaler_rbac(config)
    role = next(o for o in scaler_objects if o["kind"] == "Role")
    lease = next(o for o in scaler_objects if o["kind"] == "Lease")
    assert lease["metadata"]["name"] == n.activity_lease == f"{n.vllm}-activity"  # the wrapper's default
    granted = {
        (verb, group, resource, name)
        for rule in role["rules"]
        for verb in rule["verbs"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for name in rule["resourceNames"]
    }
    assert granted == {("get", "apps", "statefulsets", n.vllm),
                       ("get", "apps", "statefulsets/scale", n.vllm), ("patch", "apps", "statefulsets/scale", n.vllm),
                       ("get", "coordination.k8s.io", "leases", n.activity_lease),
                       ("patch", "coordination.k8s.io", "leases", n.activity_lease)}
    with FakeAPIServer(n.namespace, n.vllm, replicas=0, ready=0) as api:
        api.on_replicas = lambda old, new: api.set_ready(new)
        s = Scaler(StatefulSetClient(n.namespace, n.vllm, ANNOTATION, api_url=api.url), Policy(30), wake_timeout=5, poll=0.01)
        try:
            await s.admit()  # wake: read, publish activity, scale up, poll
            assert s.state == ScaleState.READY
            s.policy.started = s.policy.own = s.policy._confirmed_at = s.policy.clock.monotonic() - 60
            s.policy.shared = s.policy.ready_at = s.policy.own
            await s.tick()  # sleep: read, scale down, re-read
            assert api.replicas == 0
        finally:
            await s.stop()
        sts = f"/apis/apps/v1/namespaces/{n.namespace}/statefulsets/{n.vllm}"
        lease_path = f"/apis/coordination.k8s.io/v1/namespaces/{n.namespace}/leases/{n.activity_lease}"
        target = {sts: ("apps", "statefulsets", n.vllm), sts + "/scale": ("apps", "statefulsets/scale", n.vllm),
                  lease_path: ("coordination.k8s.io", "leases", n.activity_lease)}
        used = {({"GET": "get", "PATCH": "patch"}[r.method], *target[r.path]) for r in api.requests}
    assert used <= granted
    assert ("patch", "apps", "statefulsets", n.vllm) not in used


@pytest.mark.parametrize("stack", ["dev"])
def test_pulumi_leaves_the_replica_count_to_the_wrapper(stack: str) -> None:
    from components.kubernetes import statefulset_ignored_fields

    assert statefulset_ignored_fields(load_stack(stack)) == ["spec.replicas"]
    assert statefulset_ignored_fields(load_stack("prod")) == []


def test_without_an_idle_timeout_the_scaler_is_not_even_imported() -> None:
    import os
    import subprocess
    import sys

    code = ("import sys; from wrapper.app import create_app; from wrapper.settings import load_settings; "
            "create_app(load_settings()); print('wrapper.scaling' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLLM_")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                         cwd="/tmp")
    assert out.stdout.strip() == "False"
