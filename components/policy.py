"""The project's own rules for the objects it declares; each returns the violations it finds.

They encode what production vLLM deployments have been bitten by: unpinned images,
secrets in args, probes on guarded paths, pods nobody fences off.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from components.gpu_pool import KARPENTER_GPU_MEMORY, KARPENTER_GPU_NAME, pod_node_labels
from components.manifests import SKIP_AWAIT, Manifest
from components.secrets import secret_flag

_SECRET_NAME = re.compile(r"(^|_)(KEY|TOKEN|SECRET|PASSWORD)$", re.IGNORECASE)
_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component")
_WORKLOADS = ("Deployment", "StatefulSet")
_EKS_LABEL_PREFIXES = ("karpenter.k8s.aws/", "eks.amazonaws.com/")


def _pods(objects: list[Manifest]) -> Iterator[tuple[Manifest, Manifest]]:
    for obj in objects:
        if obj["kind"] in _WORKLOADS:
            yield obj, obj["spec"]["template"]


def _containers(objects: list[Manifest]) -> Iterator[tuple[str, Manifest]]:
    for obj, template in _pods(objects):
        for container in template["spec"]["containers"]:
            yield f"{obj['kind']}/{obj['metadata']['name']}/{container['name']}", container


def pinned_images(objects: list[Manifest]) -> list[str]:
    return [
        f"{where}: image {c['image']!r} is not pinned to a tag or digest"
        for where, c in _containers(objects)
        if "@sha256:" not in c["image"] and (":" not in c["image"].rsplit("/", 1)[-1] or c["image"].endswith(":latest"))
    ]


def bounded_resources(objects: list[Manifest]) -> list[str]:
    found = []
    for where, c in _containers(objects):
        for bound in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                if resource not in c.get("resources", {}).get(bound, {}):
                    found.append(f"{where}: no {resource} {bound}")
        gpus = {b: c["resources"].get(b, {}).get("nvidia.com/gpu") for b in ("requests", "limits")}
        if gpus["requests"] != gpus["limits"]:
            found.append(f"{where}: nvidia.com/gpu request {gpus['requests']} ≠ limit {gpus['limits']}")
    return found


def probed(objects: list[Manifest]) -> list[str]:
    found = []
    for where, c in _containers(objects):
        for probe in ("readinessProbe", "livenessProbe"):
            if probe not in c:
                found.append(f"{where}: no {probe}")
            elif c[probe].get("httpGet", {}).get("path", "").startswith("/v1"):
                found.append(f"{where}: {probe} on {c[probe]['httpGet']['path']}, which needs the API key")
    return found


def secrets_by_reference(objects: list[Manifest]) -> list[str]:
    found = []
    for where, c in _containers(objects):
        for arg in [*c.get("command", []), *c.get("args", [])]:
            if flag := secret_flag(arg):
                found.append(f"{where}: secret flag {flag} in the container's command line")
        for env in c.get("env", []):
            if _SECRET_NAME.search(env["name"]) and "value" in env:
                found.append(f"{where}: {env['name']} set as a plain value, not from a Secret")
    return found


def restricted(objects: list[Manifest]) -> list[str]:
    found = []
    for obj, template in _pods(objects):
        seccomp = template["spec"].get("securityContext", {}).get("seccompProfile", {}).get("type")
        if seccomp != "RuntimeDefault":
            found.append(f"{obj['kind']}/{obj['metadata']['name']}: pod without the RuntimeDefault seccomp profile")
    for where, c in _containers(objects):
        context = c.get("securityContext", {})
        if context.get("allowPrivilegeEscalation") is not False:
            found.append(f"{where}: privilege escalation not disabled")
        if "ALL" not in context.get("capabilities", {}).get("drop", []):
            found.append(f"{where}: capabilities not dropped")
    return found


def fenced(objects: list[Manifest]) -> list[str]:
    """Every pod is selected by a NetworkPolicy."""
    selectors = [o["spec"]["podSelector"]["matchLabels"] for o in objects if o["kind"] == "NetworkPolicy"]
    return [
        f"{obj['kind']}/{obj['metadata']['name']}: no NetworkPolicy selects its pods"
        for obj, template in _pods(objects)
        if not any(s.items() <= template["metadata"]["labels"].items() for s in selectors)
    ]


def labelled(objects: list[Manifest]) -> list[str]:
    found = []
    for obj in objects:
        missing = [label for label in _LABELS if label not in obj["metadata"].get("labels", {})]
        if missing:
            found.append(f"{obj['kind']}/{obj['metadata']['name']}: missing labels {missing}")
        if obj["kind"] != "Namespace" and not obj["metadata"].get("namespace"):
            found.append(f"{obj['kind']}/{obj['metadata']['name']}: no namespace")
    return found


def awaited(objects: list[Manifest]) -> list[str]:
    """Services never wait on vLLM (the StatefulSet's await does, with its budget), and carry no
    label an image bump changes (pulumi-kubernetes provider/pkg/await/service.go waits 10 min for a
    ready endpoint on every create *and* update)."""
    found = []
    for obj in objects:
        if obj["kind"] != "Service":
            continue
        where = f"Service/{obj['metadata']['name']}"
        if "app.kubernetes.io/version" in obj["metadata"].get("labels", {}):
            found.append(f"{where}: app.kubernetes.io/version label, so an image bump updates and re-awaits it")
        selects_vllm = obj["spec"].get("selector", {}).get("app.kubernetes.io/component") == "vllm"
        if selects_vllm and obj["metadata"].get("annotations", {}).get(SKIP_AWAIT) != "true":
            found.append(
                f'{where}: selects vLLM\'s pods without {SKIP_AWAIT}: "true" (waits 10 min for a loading or sleeping vLLM)'
            )
    return found


_BASELINE_VOLUMES = {
    "emptyDir",
    "persistentVolumeClaim",
    "secret",
    "configMap",
    "projected",
    "downwardAPI",
    "ephemeral",
    "csi",
}


def pod_security_level(template: Manifest) -> str:
    """The strictest Pod Security Standard a pod template meets, for the fields this project sets
    (https://kubernetes.io/docs/concepts/security/pod-security-standards/)."""
    spec = template["spec"]
    containers = spec["containers"]
    host = any(spec.get(f) for f in ("hostNetwork", "hostPID", "hostIPC"))
    privileged = any(c.get("securityContext", {}).get("privileged") for c in containers)
    host_path = any("hostPath" in v for v in spec.get("volumes", []))
    if host or privileged or host_path:
        return "privileged"
    pod_context = spec.get("securityContext", {})
    non_root = all(
        c.get("securityContext", {}).get("runAsNonRoot", pod_context.get("runAsNonRoot")) for c in containers
    )
    restricted_ok = (
        non_root
        and pod_context.get("seccompProfile", {}).get("type") == "RuntimeDefault"
        and all(c.get("securityContext", {}).get("allowPrivilegeEscalation") is False for c in containers)
        and all("ALL" in c.get("securityContext", {}).get("capabilities", {}).get("drop", []) for c in containers)
        and all(set(v) - {"name"} <= _BASELINE_VOLUMES for v in spec.get("volumes", []))
    )
    return "restricted" if restricted_ok else "baseline"


_LEVELS = ("privileged", "baseline", "restricted")


def pod_security(objects: list[Manifest]) -> list[str]:
    """The namespace enforces a Pod Security level every pod meets; the wrapper meets restricted."""
    found = []
    enforced = None
    for obj in objects:
        if obj["kind"] == "Namespace":
            enforced = obj["metadata"].get("labels", {}).get("pod-security.kubernetes.io/enforce")
            if enforced not in ("baseline", "restricted"):
                found.append(
                    f"Namespace/{obj['metadata']['name']}: enforces Pod Security {enforced or 'nothing'}, not baseline or stricter"
                )
    for obj, template in _pods(objects):
        level = pod_security_level(template)
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        if enforced in _LEVELS and _LEVELS.index(level) < _LEVELS.index(enforced):
            found.append(f"{where}: meets Pod Security {level}, but its namespace enforces {enforced}")
        if template["metadata"]["labels"].get("app.kubernetes.io/component") == "wrapper" and level != "restricted":
            found.append(f"{where}: the wrapper meets only Pod Security {level}, not restricted")
    return found


def _wants_gpu(pod_spec: Manifest) -> bool:
    return any("nvidia.com/gpu" in c.get("resources", {}).get("limits", {}) for c in pod_spec["containers"])


def gpu_pool(objects: list[Manifest]) -> list[str]:
    """A GPU workload picks its GPU nodes by label, unambiguously; on EKS its cache names a class.

    - no node selection: the pod lands on any GPU node with room, whatever the GPU;
    - Karpenter's `instance-gpu-name` alone is ambiguous (`a100` is both the 40 GB p4d and the
      80 GB p4de; karpenter.sh/docs/reference/instance-types): `instance-gpu-memory` must pin it;
    - selected by an EKS label (Karpenter's, a managed node group's) with a claim template that
      names no StorageClass: EKS 1.30+ marks none default, so the claim and the pod stay Pending.
    """
    found = []
    for obj, template in _pods(objects):
        spec, where = template["spec"], f"{obj['kind']}/{obj['metadata']['name']}"
        if not _wants_gpu(spec):
            continue
        labels = pod_node_labels(spec)
        if not labels:
            found.append(
                f"{where}: requests GPUs but selects no node label, so it lands on any GPU; set kubernetes.gpuPool"
            )
        if KARPENTER_GPU_NAME in labels and KARPENTER_GPU_MEMORY not in labels:
            found.append(
                f"{where}: selects {KARPENTER_GPU_NAME} without {KARPENTER_GPU_MEMORY}, which tells GPU sizes apart"
            )
        if any(k.startswith(_EKS_LABEL_PREFIXES) for k in labels):
            for claim in obj["spec"].get("volumeClaimTemplates", []):
                if not claim.get("spec", {}).get("storageClassName"):
                    found.append(
                        f"{where}: claim {claim['metadata']['name']} names no storageClassName on an EKS node pool "
                        "(EKS 1.30+ has no default StorageClass); set kubernetes.cache.storageClass"
                    )
    return found


RULES: dict[str, Callable[[list[Manifest]], list[str]]] = {
    "pinned-images": pinned_images,
    "bounded-resources": bounded_resources,
    "probed": probed,
    "secrets-by-reference": secrets_by_reference,
    "restricted": restricted,
    "fenced": fenced,
    "labelled": labelled,
    "awaited": awaited,
    "pod-security": pod_security,
    "gpu-pool": gpu_pool,
}


def violations(objects: list[Manifest]) -> list[str]:
    return [f"[{name}] {v}" for name, rule in RULES.items() for v in rule(objects)]
