"""GPU pool presets (issue 12, day 1 points 1 and 2): vLLM's pods select labels the cluster's
autoscaler can see on a node group at zero, match every form factor of the GPU, and get a cache
claim that binds on that kind of cluster.

Scheduling is modelled as the scheduler matches it (kubernetes.io/docs/concepts/scheduling-eviction/
assign-pod-node/: every nodeSelector label, and one of the required nodeAffinity terms, each of
whose `In` expressions holds the node's value). Scale-from-zero is modelled as the cluster
autoscaler does it: it simulates a node from the node group's template, which carries the group's
own labels and never those a DaemonSet adds after the node runs (kubernetes/autoscaler,
cluster-autoscaler/FAQ.md "How can I scale a node group to 0?").
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from components import catalog, changes, gpu_pool, manifests, preflight
from components.cli import app
from components.config import ConfigError, parse_stack_config
from components.stackfile import read_raw

Manifest = dict[str, Any]


def stack(**kubernetes: Any) -> dict[str, Any]:
    """The dev stack (A100-80GB, scale to zero after 15 min) with `kubernetes` keys merged in."""
    raw = copy.deepcopy(read_raw("dev"))
    raw["kubernetes"] = {**raw.get("kubernetes", {}), **kubernetes}
    return raw


def objects(raw: dict[str, Any], gpu: str | None = None) -> list[Manifest]:
    if gpu is not None:
        raw = {**raw, "gpu": {"type": gpu, "count": 1}, "model": {"id": "Qwen/Qwen2.5-1.5B-Instruct", "gated": False}}
    return manifests.build(parse_stack_config(raw, require_secrets=False)).all()


def pod_spec(objs: list[Manifest]) -> Manifest:
    return next(o for o in objs if o["kind"] == "StatefulSet")["spec"]["template"]["spec"]


def claim(objs: list[Manifest]) -> Manifest:
    return next(o for o in objs if o["kind"] == "StatefulSet")["spec"]["volumeClaimTemplates"][0]


def schedulable(pod: Manifest, node_labels: dict[str, str]) -> bool:
    """Could the scheduler place `pod` on a node with these labels (node selection only)?"""
    if any(node_labels.get(k) != v for k, v in (pod.get("nodeSelector") or {}).items()):
        return False
    required = pod.get("affinity", {}).get("nodeAffinity", {}).get("requiredDuringSchedulingIgnoredDuringExecution")
    if not required:
        return True
    return any(
        all(node_labels.get(e["key"]) in e["values"] for e in term["matchExpressions"] if e["operator"] == "In")
        for term in required["nodeSelectorTerms"]
    )


# What each kind of node group's template carries before any node of it runs, and what GPU feature
# discovery adds once one does (a node of that GPU, in the given form factor).
def gke_template(gpu: catalog.Gpu, series: int = 0) -> dict[str, str]:
    # GKE puts the pool's accelerator on its nodes and its autoscaler's templates
    # (cloud.google.com/kubernetes-engine/docs/how-to/gpus, "Run GPUs in Standard node pools").
    return {"cloud.google.com/gke-nodepool": "gpu-pool", gpu_pool.GKE_ACCELERATOR: gpu.gke_accelerators[series]}


def karpenter_template(gpu: catalog.Gpu) -> dict[str, str]:
    # Well-known labels Karpenter derives from the instance type it picks (karpenter.sh/docs/
    # reference/instance-types, e.g. p4de.24xlarge: instance-gpu-name a100, instance-gpu-memory 81920).
    return {
        "karpenter.sh/nodepool": "gpu",
        gpu_pool.KARPENTER_GPU_NAME: str(gpu.karpenter_name),
        gpu_pool.KARPENTER_GPU_MEMORY: str(gpu.karpenter_memory_mib),
    }


def node_group_template() -> dict[str, str]:
    # An EKS managed node group's labels are in the autoscaler's template (it reads them with
    # eks:DescribeNodegroup; cluster-autoscaler/cloudprovider/aws/README.md, "Scaling a node group to 0").
    return {"eks.amazonaws.com/nodegroup": "gpu-a100"}


def running(template: dict[str, str], product: str) -> dict[str, str]:
    return {**template, gpu_pool.GFD_PRODUCT: product}


# ------------------------------------------------------- point 1: node selection


@pytest.mark.parametrize("gpu", sorted(g for g, spec in catalog.GPUS.items() if spec.gke_accelerators))
def test_the_gke_preset_scales_a_gke_pool_up_from_zero_for_every_machine_series(gpu: str) -> None:
    pod = pod_spec(objects(stack(gpuPool={"preset": "gke"}), gpu))
    spec = catalog.GPUS[gpu]
    for series in range(len(spec.gke_accelerators)):  # H100: A3 High and A3 Mega pools
        assert schedulable(pod, gke_template(spec, series)), spec.gke_accelerators[series]
    other = next(g for g in catalog.GPUS.values() if g.gke_accelerators and g.gke_accelerators != spec.gke_accelerators)
    assert not schedulable(pod, gke_template(other))


@pytest.mark.parametrize("gpu", sorted(catalog.GPUS))
def test_the_karpenter_preset_picks_the_gpu_by_name_and_memory(gpu: str) -> None:
    pod = pod_spec(objects(stack(gpuPool={"preset": "karpenter"}, cache={"storageClass": "gp3"}), gpu))
    assert schedulable(pod, karpenter_template(catalog.GPUS[gpu]))
    same_name = [
        g for g in catalog.GPUS.values() if g.karpenter_name == catalog.GPUS[gpu].karpenter_name and g.name != gpu
    ]
    for other in same_name:  # a100: p4d (40 GB) must never stand in for p4de (80 GB)
        assert not schedulable(pod, karpenter_template(other)), other.name


def test_the_40_and_80_gb_a100_are_told_apart_on_karpenter() -> None:
    raw = stack(gpuPool={"preset": "karpenter"}, cache={"storageClass": "gp3"})
    assert pod_spec(objects(raw, "A100-80GB"))["nodeSelector"] == {
        "karpenter.k8s.aws/instance-gpu-memory": "81920",
        "karpenter.k8s.aws/instance-gpu-name": "a100",
    }
    assert pod_spec(objects(raw, "A100-40GB"))["nodeSelector"]["karpenter.k8s.aws/instance-gpu-memory"] == "40960"


def test_the_node_group_preset_selects_the_label_the_user_names() -> None:
    raw = stack(
        gpuPool={"preset": "nodeGroup", "label": "eks.amazonaws.com/nodegroup", "value": "gpu-a100"},
        cache={"storageClass": "gp3"},
    )
    pod = pod_spec(objects(raw))
    assert pod["nodeSelector"] == {"eks.amazonaws.com/nodegroup": "gpu-a100"}
    assert "affinity" not in pod
    assert schedulable(pod, node_group_template())


@pytest.mark.parametrize("gpu", sorted(g for g, spec in catalog.GPUS.items() if len(spec.node_products) > 1))
def test_gfd_matches_every_form_factor_of_the_gpu(gpu: str) -> None:
    # Before presets the default selected the SXM name only: a PCIe A100 node never matched.
    spec = catalog.GPUS[gpu]
    for default in (stack(), stack(gpuPool={"preset": "gfd"})):
        pod = pod_spec(objects(default, gpu))
        for product in spec.node_products:
            assert schedulable(pod, running({}, product)), product
        others = [p for g in catalog.GPUS.values() if g.name != gpu for p in g.node_products]
        assert not any(schedulable(pod, running({}, p)) for p in others)


def test_the_pcie_a100_node_runs_the_dev_stack() -> None:
    pod = pod_spec(objects(stack()))
    assert schedulable(pod, running(node_group_template(), "NVIDIA-A100-80GB-PCIe"))
    assert schedulable(pod, running(node_group_template(), "NVIDIA-A100-SXM4-80GB"))


def test_gfd_labels_cannot_scale_a_pool_up_from_zero_but_every_other_preset_can() -> None:
    a100 = catalog.GPUS["A100-80GB"]
    gfd = pod_spec(objects(stack()))
    assert not schedulable(gfd, gke_template(a100))  # the template has no nvidia.com/gpu.product
    assert not schedulable(gfd, karpenter_template(a100))
    assert schedulable(gfd, running(gke_template(a100), a100.node_product))  # once a node runs, it does


def test_node_selector_beside_a_preset_adds_labels_and_alone_replaces_the_default() -> None:
    beside = pod_spec(objects(stack(gpuPool={"preset": "gke"}, nodeSelector={"cloud.google.com/gke-spot": "true"})))
    assert beside["nodeSelector"] == {
        "cloud.google.com/gke-accelerator": "nvidia-a100-80gb",
        "cloud.google.com/gke-spot": "true",
    }
    alone = pod_spec(objects(stack(nodeSelector={"pool": "a100"})))  # what such stacks always rendered
    assert alone["nodeSelector"] == {"pool": "a100"} and "affinity" not in alone


def test_the_default_keeps_single_name_gpus_as_they_rendered() -> None:
    # One GFD name (L4, T4, L40S, A10G, B200): the same nodeSelector as before presets existed.
    assert pod_spec(objects(stack(), "L4"))["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-L4"}
    assert pod_spec(objects(stack(), "T4"))["nodeSelector"] == {"nvidia.com/gpu.product": "Tesla-T4"}


@pytest.mark.parametrize(
    ("kubernetes", "gpu", "key", "says"),
    [
        (
            {"gpuPool": {"preset": "nodeGroup", "value": "gpu"}, "cache": {"storageClass": "gp3"}},
            None,
            "kubernetes.gpuPool.label",
            "eks.amazonaws.com/nodegroup",
        ),
        (
            {"gpuPool": {"preset": "nodeGroup", "label": "agentpool"}, "cache": {"storageClass": "x"}},
            None,
            "kubernetes.gpuPool.value",
            "required with preset nodeGroup",
        ),
        ({"gpuPool": {"preset": "gke"}}, "L40S", "kubernetes.gpuPool.preset", "gke clusters offer no L40S nodes"),
        (
            {"gpuPool": {"preset": "gfd", "label": "pool"}},
            None,
            "kubernetes.gpuPool.label",
            "only with preset nodeGroup",
        ),
        (
            {"gpuPool": {"preset": "gpu-operator"}},
            None,
            "kubernetes.gpuPool.preset",
            "'gfd', 'gke', 'karpenter' or 'nodeGroup'",
        ),
        ({"gpuPool": {}}, None, "kubernetes.gpuPool.preset", "required"),
        ({"gpuPool": {"preset": "gke"}}, "none", "kubernetes.gpuPool", "gpu.type none"),
        (
            {"gpuPool": {"preset": "karpenter"}},
            None,
            "kubernetes.cache.storageClass",
            "EKS 1.30 and later mark no StorageClass default",
        ),
        (
            {"gpuPool": {"preset": "nodeGroup", "label": "eks.amazonaws.com/nodegroup", "value": "gpu"}},
            None,
            "kubernetes.cache.storageClass",
            "required with kubernetes.gpuPool.preset nodeGroup",
        ),
    ],
)
def test_a_preset_missing_what_it_needs_fails_in_one_line_naming_the_key(
    kubernetes: dict, gpu: str | None, key: str, says: str
) -> None:
    raw = stack(**kubernetes)
    if gpu is not None:
        raw["gpu"] = {"type": gpu}
        raw["model"] = {"id": "Qwen/Qwen2.5-1.5B-Instruct", "gated": False}
    with pytest.raises(ConfigError) as caught:
        parse_stack_config(raw, require_secrets=False)
    (line,) = caught.value.problems
    assert line.startswith(f"{key}: ") and says in line, line


# ------------------------------------------------------- the check warning


def check_output(tmp_path, raw: dict[str, Any]) -> tuple[int, str]:
    # A pinned model revision, so that the only warning left to see is the GPU pool's.
    raw = {**raw, "model": {**raw["model"], "revision": "0123456789abcdef0123456789abcdef01234567"}}
    (tmp_path / "Pulumi.mine.yaml").write_text(
        yaml.safe_dump({"config": {f"vllm-deploy:{k}": v for k, v in raw.items()}})
    )
    result = CliRunner().invoke(app, ["check", "mine", "--stacks-dir", str(tmp_path)])
    return result.exit_code, result.output


def test_check_warns_when_scale_to_zero_meets_a_label_only_a_running_node_has(tmp_path) -> None:
    code, out = check_output(tmp_path, stack())
    assert code == 0, out  # a warning, not a failure: the pool may keep a node up
    (line,) = [line for line in out.splitlines() if line.startswith("  warning: ")]
    assert "kubernetes.gpuPool: vLLM selects nodes by nvidia.com/gpu.product" in line
    assert "gke, karpenter or nodeGroup" in line

    code, out = check_output(tmp_path, stack(nodeSelector={"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}))
    assert "warning: kubernetes.nodeSelector: vLLM selects nodes by nvidia.com/gpu.product" in out


@pytest.mark.parametrize(
    "raw",
    [
        stack(gpuPool={"preset": "gke"}),
        stack(gpuPool={"preset": "karpenter"}, cache={"storageClass": "gp3"}),
        {**stack(), "idleTimeout": "never"},  # always on: the node stays, its labels with it
    ],
    ids=["gke", "karpenter", "always-on-gfd"],
)
def test_check_says_nothing_where_the_autoscaler_sees_the_labels(tmp_path, raw: dict) -> None:
    code, out = check_output(tmp_path, raw)
    assert code == 0 and "warning" not in out, out


# ------------------------------------------------------- point 2: storage per preset


def test_gke_caches_on_standard_rwo_unless_the_stack_names_a_class() -> None:
    assert claim(objects(stack(gpuPool={"preset": "gke"})))["spec"]["storageClassName"] == "standard-rwo"
    named = claim(objects(stack(gpuPool={"preset": "gke"}, cache={"storageClass": "premium-rwo"})))
    assert named["spec"]["storageClassName"] == "premium-rwo"


def test_without_a_preset_the_claim_is_what_it_was() -> None:
    assert "storageClassName" not in claim(objects(stack()))["spec"]  # the cluster's default class


def test_a_karpenter_stack_caches_on_the_class_it_names() -> None:
    raw = stack(gpuPool={"preset": "karpenter"}, cache={"storageClass": "gp3"})
    assert claim(objects(raw))["spec"]["storageClassName"] == "gp3"


def test_moving_to_a_preset_that_changes_the_class_replaces_the_statefulset_with_new_claims() -> None:
    # volumeClaimTemplates are force-new in pulumi-kubernetes (provider/pkg/provider/diff.go): the
    # claim template is named by its class, so the new pods get claims in the new class.
    before, after = objects(stack()), objects(stack(gpuPool={"preset": "gke"}))
    found = changes.compare(before, after)
    assert [c.action for c in found if c.kind == "StatefulSet"] == ["replace"]
    assert [c.describe() for c in found if c.rejected] == []
    assert claim(after)["metadata"]["name"] != claim(before)["metadata"]["name"]


def test_moving_between_presets_of_the_same_class_is_a_rolling_update() -> None:
    raw = {"cache": {"storageClass": "gp3"}}
    before = objects(
        stack(gpuPool={"preset": "nodeGroup", "label": "eks.amazonaws.com/nodegroup", "value": "gpu"}, **raw)
    )
    after = objects(stack(gpuPool={"preset": "karpenter"}, **raw))
    assert [c.action for c in changes.compare(before, after) if c.kind == "StatefulSet"] == ["update"]


# ------------------------------------------------------- preflight reads the same selection


class RecordedCluster:
    """Answers `kubectl get` as a cluster of this shape would (preflight's Cluster protocol)."""

    def __init__(self, nodes: list[Manifest], nodepools: list[Manifest] | None = None) -> None:
        self.answers = {"nodes": {"items": nodes}, preflight.KARPENTER_NODEPOOLS: {"items": nodepools or []}}

    def version(self) -> dict[str, Any]:
        return {"gitVersion": "v1.31.2"}

    def get(self, resource: str, name: str | None = None, **_: Any) -> Any:
        return self.answers.get(resource)


def node(name: str, labels: dict[str, str]) -> Manifest:
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }


def test_preflight_finds_a_pcie_node_for_the_default_selection() -> None:
    needs = preflight.Needs.of(objects(stack()))
    found = preflight.check_gpu_nodes(RecordedCluster([node("gpu-0", running({}, "NVIDIA-A100-80GB-PCIe"))]), needs)
    assert found.status == "pass", found
    assert "nvidia.com/gpu.product=NVIDIA-A100-SXM4-80GB|NVIDIA-A100-80GB-PCIe" in found.detail


def test_preflight_sees_a_karpenter_nodepool_that_can_launch_the_preset_from_zero() -> None:
    # A GPU NodePool constraining instance families, not GPU names: Karpenter can still pick a
    # p4de whose well-known labels match (karpenter.sh/docs/concepts/scheduling, "Well-Known Labels").
    pool = {
        "metadata": {"name": "gpu"},
        "spec": {
            "template": {
                "spec": {
                    "requirements": [
                        {"key": "karpenter.k8s.aws/instance-family", "operator": "In", "values": ["p4de", "p5"]}
                    ]
                }
            }
        },
    }
    needs = preflight.Needs.of(objects(stack(gpuPool={"preset": "karpenter"}, cache={"storageClass": "gp3"})))
    found = preflight.check_gpu_nodes(RecordedCluster([], [pool]), needs)
    assert found.status == "warn" and "NodePool(s) gpu can launch one" in found.detail, found
    # and a NodePool that pins a 40 GB GPU's memory cannot
    pinned = copy.deepcopy(pool)
    pinned["spec"]["template"]["spec"]["requirements"].append(
        {"key": gpu_pool.KARPENTER_GPU_MEMORY, "operator": "Lt", "values": ["50000"]}
    )
    assert preflight.check_gpu_nodes(RecordedCluster([], [pinned]), needs).status == "fail"
