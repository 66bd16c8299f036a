"""Where vLLM's pods may run: the node labels of a GPU pool preset, and the cache's storage class.

A preset names the labels a kind of cluster puts on its GPU nodes *before* they run, so that an
autoscaler can match a pending pod against a node group at zero:

- `gke`: `cloud.google.com/gke-accelerator`, a node pool label GKE's autoscaler knows from the
  pool's accelerator config (cloud.google.com/kubernetes-engine/docs/how-to/gpus);
- `karpenter`: `karpenter.k8s.aws/instance-gpu-name` and `-gpu-memory`, well-known labels Karpenter
  sets from the instance type it picks (karpenter.sh/docs/reference/instance-types);
- `nodeGroup`: one label the user names, as an EKS managed node group or an AKS node pool carries it;
- `gfd`: `nvidia.com/gpu.product`, which NVIDIA's GPU feature discovery puts on a node only once
  it runs: fine for nodes that exist, invisible to an autoscaler scaling a group up from zero.

The GPU facts come from components/catalog.py; the chart reads the same tables (components/chartgen.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from components import catalog

if TYPE_CHECKING:
    from components.config import StackConfig

Preset = Literal["gfd", "gke", "karpenter", "nodeGroup"]
PRESETS: tuple[Preset, ...] = ("gfd", "gke", "karpenter", "nodeGroup")
# With no `kubernetes.gpuPool` (and no `kubernetes.nodeSelector`): what every stack rendered before presets.
DEFAULT_PRESET: Preset = "gfd"

GFD_PRODUCT = "nvidia.com/gpu.product"
GKE_ACCELERATOR = "cloud.google.com/gke-accelerator"
KARPENTER_GPU_NAME = "karpenter.k8s.aws/instance-gpu-name"
KARPENTER_GPU_MEMORY = "karpenter.k8s.aws/instance-gpu-memory"
# Labels a DaemonSet writes on a node once it runs (GPU feature discovery, node feature discovery):
# no autoscaler's node template carries them.
DISCOVERED_LABEL_PREFIXES = ("nvidia.com/", "feature.node.kubernetes.io/")

# The cache's StorageClass where the stack names none. GKE's `standard-rwo` (pd-balanced, its
# default class) binds WaitForFirstConsumer, so the disk is made in the zone the pod lands in.
DEFAULT_STORAGE_CLASS: dict[str, str] = {"gke": "standard-rwo"}
# EKS 1.30 and later mark no StorageClass default (docs.aws.amazon.com/eks/latest/userguide/
# storage-classes.html): a claim without one stays Pending, and vLLM with it.
NEEDS_STORAGE_CLASS: tuple[Preset, ...] = ("karpenter", "nodeGroup")

Labels = dict[str, list[str]]  # node label → the values any one of which will do


def preset_labels(preset: Preset, gpu: catalog.Gpu) -> Labels | None:
    """The labels `preset` selects `gpu` by; None where that kind of cluster has no such GPU."""
    if preset == "gfd":
        return {GFD_PRODUCT: list(gpu.node_products)}
    if preset == "gke":
        return {GKE_ACCELERATOR: list(gpu.gke_accelerators)} if gpu.gke_accelerators else None
    if preset == "karpenter":
        if gpu.karpenter_name is None or gpu.karpenter_memory_mib is None:
            return None
        return {KARPENTER_GPU_NAME: [gpu.karpenter_name], KARPENTER_GPU_MEMORY: [str(gpu.karpenter_memory_mib)]}
    return None  # nodeGroup: the user's label, not the GPU's


def node_labels(config: StackConfig) -> Labels:
    """What vLLM's pods select nodes by. `kubernetes.nodeSelector` alone replaces the default (as it
    always did); beside an explicit `kubernetes.gpuPool` it adds to the preset's labels."""
    k8s, chosen = config.kubernetes, {k: [v] for k, v in (config.kubernetes.node_selector or {}).items()}
    if config.gpu.is_cpu or (k8s.gpu_pool is None and chosen):
        return chosen
    pool = k8s.gpu_pool
    if pool is not None and pool.preset == "nodeGroup":
        labels: Labels = {str(pool.label): [str(pool.value)]}
    else:
        found = preset_labels(pool.preset if pool else DEFAULT_PRESET, catalog.GPUS[config.gpu.type])
        labels = dict(found or {})
    return labels | chosen


def placement(labels: Labels) -> dict[str, Any]:
    """Pod spec fields for `labels`: one value as `nodeSelector`; several as a required node affinity
    (`In`), since a nodeSelector cannot say "any of". Keys in sorted order, as Helm ranges over them."""
    single = {k: v[0] for k, v in sorted(labels.items()) if len(v) == 1}
    several = [{"key": k, "operator": "In", "values": list(v)} for k, v in sorted(labels.items()) if len(v) > 1]
    fields: dict[str, Any] = {}
    if single:
        fields["nodeSelector"] = single
    if several:
        term = {"matchExpressions": several}
        fields["affinity"] = {
            "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}
        }
    return fields


def pod_node_labels(pod_spec: dict[str, Any]) -> Labels:
    """What a rendered pod spec selects nodes by: its nodeSelector, and the `In` expressions of its
    required node affinity when it has one term (several terms are ORed: then no label is required)."""
    labels = {k: [v] for k, v in (pod_spec.get("nodeSelector") or {}).items()}
    affinity = pod_spec.get("affinity", {}).get("nodeAffinity", {})
    terms = affinity.get("requiredDuringSchedulingIgnoredDuringExecution", {}).get("nodeSelectorTerms", [])
    if len(terms) == 1:
        for expression in terms[0].get("matchExpressions", []):
            if expression.get("operator") == "In":
                labels[expression["key"]] = list(expression.get("values", []))
    return labels


def preset_of(config: StackConfig) -> Preset | None:
    """The preset in force on a GPU stack (None on CPU, or where `kubernetes.nodeSelector` replaced it)."""
    if config.gpu.is_cpu:
        return None
    if config.kubernetes.gpu_pool is not None:
        return config.kubernetes.gpu_pool.preset
    return None if config.kubernetes.node_selector else DEFAULT_PRESET


def cache_storage_class(config: StackConfig) -> str | None:
    """`kubernetes.cache.storageClass`, else the preset's default, else None (the cluster's default)."""
    if config.kubernetes.cache.storage_class:
        return config.kubernetes.cache.storage_class
    preset = preset_of(config)
    return DEFAULT_STORAGE_CLASS.get(preset) if preset else None


def discovered_labels(config: StackConfig) -> list[str]:
    """The labels vLLM selects by that appear on a node only after it runs."""
    return [k for k in node_labels(config) if k.startswith(DISCOVERED_LABEL_PREFIXES)]


def scale_from_zero_warnings(config: StackConfig) -> list[str]:
    """With scale-to-zero, the GPU pool usually scales to zero too, and must scale up again for the
    next wake: the cluster autoscaler matches a pending pod against each node group's template
    (kubernetes/autoscaler cluster-autoscaler FAQ, "How can I scale a node group to 0?"), which
    carries the group's own labels, never those a DaemonSet adds later."""
    if config.target != "kubernetes" or not config.scales_to_zero:
        return []
    found = discovered_labels(config)
    if not found:
        return []
    key = "kubernetes.gpuPool" if preset_of(config) == "gfd" else "kubernetes.nodeSelector"
    return [
        f"{key}: vLLM selects nodes by {', '.join(found)}, which GPU feature discovery puts on a node only "
        f"once it runs; with idleTimeout on, a GPU pool scaled to zero never scales up for it. "
        "Set kubernetes.gpuPool.preset to gke, karpenter or nodeGroup (labels the autoscaler's node "
        "template carries), or keep a GPU node running"
    ]
