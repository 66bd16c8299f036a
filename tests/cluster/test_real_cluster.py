"""What a real cluster and the Pulumi engine do with the objects a stack declares (issue 12).

Each test models a behaviour of pulumi-kubernetes (read in pulumi/pulumi-kubernetes v4,
provider/pkg/await/ and provider/pkg/provider/diff.go) or of the Kubernetes API server, cited
beside it; the rendered objects come from `manifests.build`, the options from the real program.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from components import changes, manifests, policy
from components.cli import app
from components.config import parse_stack_config
from components.plan import GPU_DRIVER_INSTALL_SECONDS, NODE_PROVISION_SECONDS, serving_plan
from components.stackfile import STACKS_DIR, load_stack, read_raw, stack_names
from tests.infra.pulumi_harness import run_program

KUBERNETES_STACKS = [s for s in stack_names() if load_stack(s).target == "kubernetes"]


def build(stack: str, secret_digest: str = "digest-1", **overrides: Any) -> list[dict]:
    """The objects of `stack` with `section={key: value}` overrides merged into its stack file."""
    raw = copy.deepcopy(read_raw(stack))
    for section, value in overrides.items():
        raw[section] = {**raw.get(section, {}), **value} if isinstance(value, dict) else value
    return manifests.build(parse_stack_config(raw, require_secrets=False), secret_digest=secret_digest).all()


def find(objects: list[dict], kind: str, name: str | None = None) -> dict:
    return next(o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name))


# ------------------------------------------------------------- Day 1: await budgets


@pytest.mark.parametrize("stack", KUBERNETES_STACKS)
def test_services_in_front_of_vllm_skip_pulumis_endpoint_await(stack: str) -> None:
    # provider/pkg/await/service.go: a Service with a selector is ready only once its Endpoints hold
    # a ready address, within DefaultServiceTimeoutMins = 10, on create and update alike. vLLM
    # loads for longer than that, and at zero replicas never has one: skipAwait on both Services.
    objects = manifests.build(load_stack(stack)).all()
    vllm_services = [o for o in objects if o["kind"] == "Service" and o["spec"]["selector"]["app.kubernetes.io/component"] == "vllm"]
    assert {o["metadata"]["name"] for o in vllm_services} == {"vllm", "vllm-headless"}
    assert all(o["metadata"]["annotations"][manifests.SKIP_AWAIT] == "true" for o in vllm_services)


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_pulumi_waits_for_a_new_gpu_node_its_driver_and_the_image_pull_before_the_model_load(stack: str) -> None:
    # The startup probe's clock starts when the container does; before that the pod is Pending
    # while the autoscaler adds a node, the driver installs and the image is pulled. Pulumi's
    # StatefulSet await (provider/pkg/await/statefulset.go) runs through all of it.
    plan = serving_plan(load_stack(stack))
    sts = next(d for d in run_program(stack) if d.typ == "kubernetes:apps/v1:StatefulSet")
    minutes = int(sts.opts.custom_timeouts.create.rstrip("m"))
    floor = NODE_PROVISION_SECONDS + GPU_DRIVER_INSTALL_SECONDS + 10 * 1024 // 50 + plan.startup_budget_seconds
    assert minutes * 60 >= floor
    assert sts.opts.custom_timeouts.update == sts.opts.custom_timeouts.create


def test_an_image_bump_leaves_every_service_untouched() -> None:
    # Only a changed Service is re-awaited; the version label is what an image bump changes.
    before, after = build("dev"), build("dev", vllm={"image": "vllm/vllm-openai:v0.33.0"})
    for service in [o for o in before if o["kind"] == "Service"]:
        assert find(after, "Service", service["metadata"]["name"]) == service


def test_the_awaited_rule_catches_a_version_label_or_an_awaited_vllm_service() -> None:
    objects = manifests.build(load_stack("dev")).all()
    find(objects, "Service", "vllm")["metadata"]["annotations"].clear()
    find(objects, "Service", "vllm-wrapper")["metadata"]["labels"]["app.kubernetes.io/version"] = "v1"
    found = [v for v in policy.violations(objects) if v.startswith("[awaited]")]
    assert len(found) == 2 and "Service/vllm:" in found[0] + found[1] and "Service/vllm-wrapper:" in found[0] + found[1]


# ------------------------------------------------------------- Day 1: Pod Security


@pytest.mark.parametrize("stack", KUBERNETES_STACKS)
def test_the_namespace_enforces_the_strictest_level_every_pod_meets(stack: str) -> None:
    # https://kubernetes.io/docs/concepts/security/pod-security-admission/: the namespace labels
    # decide what is admitted; vLLM's image runs as root (fails restricted), the wrapper does not.
    objects = build(stack, kubernetes={"createNamespace": True})
    labels = find(objects, "Namespace")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "baseline"
    assert labels["pod-security.kubernetes.io/audit"] == "restricted"
    assert policy.pod_security_level(find(objects, "StatefulSet")["spec"]["template"]) == "baseline"
    assert policy.pod_security_level(find(objects, "Deployment")["spec"]["template"]) == "restricted"
    assert [v for v in policy.violations(objects) if v.startswith("[pod-security]")] == []


def test_the_pod_security_rule_catches_a_root_wrapper_and_a_host_network_vllm() -> None:
    objects = build("dev", kubernetes={"createNamespace": True})
    find(objects, "Deployment")["spec"]["template"]["spec"]["securityContext"].pop("runAsNonRoot")
    find(objects, "StatefulSet")["spec"]["template"]["spec"]["hostNetwork"] = True
    found = [v for v in policy.violations(objects) if v.startswith("[pod-security]")]
    assert any("the wrapper meets only Pod Security baseline" in v for v in found)
    assert any("StatefulSet/vllm: meets Pod Security privileged, but its namespace enforces baseline" in v for v in found)


# ------------------------------------------------------------- Day 2: the catalogue

# Each entry: (the change, the overrides that make it, what pulumi-kubernetes does to the StatefulSet).
CATALOGUE = [
    ("image bump", {"vllm": {"image": "vllm/vllm-openai:v0.33.0"}}, "update"),
    ("model change", {"model": {"id": "Qwen/Qwen2.5-7B-Instruct"}}, "replace"),
    ("cache.size", {"kubernetes": {"cache": {"size": "500Gi"}}}, "replace"),
    ("cache.storageClass", {"kubernetes": {"cache": {"storageClass": "premium-rwo"}}}, "replace"),
    ("gpu.count", {"gpu": {"type": "A100-80GB", "count": 2}}, "update"),
    ("idleTimeout on -> off", {"idleTimeout": 0}, "update"),
    ("wrapper replica bounds", {"wrapper": {"replicas": {"min": 3, "max": 6}}}, None),
]


@pytest.mark.parametrize(("change", "overrides", "statefulset"), CATALOGUE, ids=[c[0] for c in CATALOGUE])
def test_no_day_2_change_is_an_update_the_api_server_rejects(change: str, overrides: dict, statefulset: str | None) -> None:
    # Kubernetes (pkg/apis/apps/validation, ValidateStatefulSetUpdate) refuses an update to any
    # StatefulSet spec field but replicas, template, updateStrategy,
    # persistentVolumeClaimRetentionPolicy, minReadySeconds and ordinals; pulumi-kubernetes
    # (diff.go forceNew) replaces instead where one of its force-new fields changes.
    found = changes.compare(build("dev"), build("dev", **overrides))
    assert [c.describe() for c in found if c.rejected] == []
    sts = [c.action for c in found if c.kind == "StatefulSet"]
    assert sts == ([statefulset] if statefulset else [])


@pytest.mark.parametrize("overrides", [c[1] for c in CATALOGUE[1:4]], ids=[c[0] for c in CATALOGUE[1:4]])
def test_a_replaced_statefulset_gets_new_claims_of_the_new_size(overrides: dict) -> None:
    # The old StatefulSet's claims are retained (whenDeleted: Retain) and a StatefulSet mounts the
    # claim `<template>-<pod>` if it exists, whatever its size: a new template name means new claims.
    before, after = build("dev"), build("dev", **overrides)
    old = find(before, "StatefulSet")["spec"]["volumeClaimTemplates"][0]
    new = find(after, "StatefulSet")["spec"]["volumeClaimTemplates"][0]
    assert new["metadata"]["name"] != old["metadata"]["name"]
    plan = serving_plan(parse_stack_config({**read_raw("dev"), **overrides}, require_secrets=False))
    assert new["spec"]["resources"]["requests"]["storage"] == plan.cache_size
    mounts = find(after, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert new["metadata"]["name"] in [m["name"] for m in mounts]


def test_a_replacement_is_announced_with_what_happens_to_the_cache() -> None:
    lines = changes.consequences(build("dev"), build("dev", kubernetes={"cache": {"size": "500Gi"}}))
    assert lines[0] == "StatefulSet/vllm: replace (spec.volumeClaimTemplates)"
    assert "stops serving" in lines[1] and "model-cache-500gi" in lines[1] and "retained" in lines[1]


def test_secret_rotation_rolls_the_pods_without_replacing_anything() -> None:
    found = changes.compare(build("dev", secret_digest="a"), build("dev", secret_digest="b"))
    assert {(c.kind, c.action) for c in found} == {("StatefulSet", "update"), ("Deployment", "update")}


def test_turning_scale_to_zero_off_forces_the_replica_count_back() -> None:
    # A /scale PATCH by the wrapper makes it the field manager of spec.replicas. While the stack
    # ignores replicas, pulumi-kubernetes drops the field from its apply (await.go
    # handleSSAIgnoreFields); applying it again without force is a field-manager conflict. The
    # `pulumi.com/patchForce: "true"` annotation forces it (await.go patchForce).
    always_on = next(d for d in run_program("dev", overrides={"idleTimeout": 0}) if d.kind == "StatefulSet")
    assert always_on.plain("metadata")["annotations"][manifests.PATCH_FORCE] == "true"
    assert not always_on.opts.ignore_changes
    assert always_on.plain("spec")["replicas"] == load_stack("dev").vllm.replicas
    scaling = next(d for d in run_program("dev") if d.kind == "StatefulSet")
    assert manifests.PATCH_FORCE not in scaling.plain("metadata")["annotations"]
    assert scaling.opts.ignore_changes == ["spec.replicas"]


def test_check_says_beforehand_that_a_cache_change_replaces_vllm(tmp_path: Path) -> None:
    deployed = CliRunner().invoke(app, ["render", "dev"])
    assert deployed.exit_code == 0, deployed.output
    (tmp_path / "last-render.yaml").write_text(deployed.stdout)
    stacks = tmp_path / "stacks"
    stacks.mkdir()
    text = (STACKS_DIR / "Pulumi.dev.yaml").read_text().replace("namespace: vllm-dev", "namespace: vllm-dev\n    cache: {size: 500Gi}")
    (stacks / "Pulumi.dev.yaml").write_text(text)
    result = CliRunner().invoke(app, ["check", "dev", "--stacks-dir", str(stacks), "--previous", str(tmp_path / "last-render.yaml")])
    assert result.exit_code == 0, result.output
    assert "StatefulSet/vllm: replace (spec.volumeClaimTemplates)" in result.stdout
    assert "new claims (model-cache-500gi)" in result.stdout
    unchanged = CliRunner().invoke(app, ["check", "dev", "--previous", str(tmp_path / "last-render.yaml")])
    assert "changes since --previous:\n    nothing" in unchanged.stdout



def test_local_vllm_runs_as_many_cpu_threads_as_its_cpu_limit() -> None:
    # vLLM's CPU build (vllm/utils/ompmultiprocessing.py): VLLM_CPU_OMP_THREADS_BIND="auto" binds a
    # thread per visible core, "nobind" leaves the count to OMP_NUM_THREADS. The downward API
    # gives limits.cpu rounded up to the divisor (kubernetes.io/docs/tasks/inject-data-application/
    # environment-variable-expose-pod-information/).
    env = {e["name"]: e for e in find(build("local"), "StatefulSet")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["VLLM_CPU_OMP_THREADS_BIND"]["value"] == "nobind"
    assert env["OMP_NUM_THREADS"]["valueFrom"]["resourceFieldRef"] == {"containerName": "vllm", "resource": "limits.cpu", "divisor": "1"}
    gpu_env = find(build("dev"), "StatefulSet")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert "OMP_NUM_THREADS" not in {e["name"] for e in gpu_env}
