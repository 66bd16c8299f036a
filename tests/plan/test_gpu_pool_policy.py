"""The policy rule `gpu-pool` (components/policy.py) on rendered objects: what `vllm-deploy check`
can tell about node selection and the cache's class without a cluster, each rule shown to fire on
an object broken on purpose."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from components import manifests, policy
from components.config import parse_stack_config
from components.stackfile import load_stack, read_raw, stack_names

KUBERNETES_STACKS = [s for s in stack_names() if load_stack(s).target == "kubernetes"]
KARPENTER = {"gpuPool": {"preset": "karpenter"}, "cache": {"storageClass": "gp3"}}


def build(**kubernetes: Any) -> list[dict]:
    raw = copy.deepcopy(read_raw("dev"))
    raw["kubernetes"] = {**raw["kubernetes"], **kubernetes}
    return manifests.build(parse_stack_config(raw, require_secrets=False)).all()


def gpu_pool_violations(objects: list[dict]) -> list[str]:
    return [v for v in policy.violations(objects) if v.startswith("[gpu-pool]")]


def vllm_pod(objects: list[dict]) -> dict:
    return next(o for o in objects if o["kind"] == "StatefulSet")["spec"]["template"]["spec"]


@pytest.mark.parametrize("stack", KUBERNETES_STACKS)
def test_every_shipped_stack_passes(stack: str) -> None:
    assert gpu_pool_violations(manifests.build(load_stack(stack)).all()) == []


@pytest.mark.parametrize(
    "kubernetes",
    [
        {"gpuPool": {"preset": "gke"}},
        KARPENTER,
        {
            "gpuPool": {"preset": "nodeGroup", "label": "eks.amazonaws.com/nodegroup", "value": "gpu"},
            "cache": {"storageClass": "gp3"},
        },
        {"gpuPool": {"preset": "gfd"}},
    ],
    ids=["gke", "karpenter", "nodeGroup", "gfd"],
)
def test_every_preset_passes(kubernetes: dict) -> None:
    assert gpu_pool_violations(build(**kubernetes)) == []


def test_a_gpu_pod_that_selects_no_node_label_is_caught() -> None:
    objects = build()
    pod = vllm_pod(objects)
    pod.pop("affinity")
    assert gpu_pool_violations(objects) == [
        "[gpu-pool] StatefulSet/vllm: requests GPUs but selects no node label, so it lands on any GPU; set kubernetes.gpuPool"
    ]


def test_a_karpenter_gpu_name_without_its_memory_is_caught() -> None:
    objects = build(**KARPENTER)
    del vllm_pod(objects)["nodeSelector"]["karpenter.k8s.aws/instance-gpu-memory"]
    (found,) = gpu_pool_violations(objects)
    assert "karpenter.k8s.aws/instance-gpu-name without karpenter.k8s.aws/instance-gpu-memory" in found


def test_an_eks_pool_with_a_claim_of_no_class_is_caught() -> None:
    objects = build(**KARPENTER)
    sts = next(o for o in objects if o["kind"] == "StatefulSet")
    del sts["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"]
    (found,) = gpu_pool_violations(objects)
    assert "names no storageClassName on an EKS node pool" in found and "kubernetes.cache.storageClass" in found


def test_a_hand_written_eks_selector_without_a_class_is_caught_too() -> None:
    # kubernetes.nodeSelector alone (no preset, so no config error): the rendered objects still show it.
    found = gpu_pool_violations(build(nodeSelector={"eks.amazonaws.com/nodegroup": "gpu"}))
    assert len(found) == 1 and "no storageClassName" in found[0]


def test_affinity_terms_that_are_ored_select_nothing_for_certain() -> None:
    objects = build()
    required = vllm_pod(objects)["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    required["nodeSelectorTerms"].append({"matchExpressions": [{"key": "pool", "operator": "In", "values": ["x"]}]})
    assert len(gpu_pool_violations(objects)) == 1


def test_cpu_pods_are_not_asked_to_select_gpu_nodes() -> None:
    assert gpu_pool_violations(manifests.build(load_stack("local")).all()) == []
