"""`vllm-deploy preflight STACK`: will `pulumi up` work on this cluster? Read-only checks.

Each check reads the cluster and gives a PASS, WARN, FAIL (or SKIP: not applicable) line
with the fix:

    context        the kube context answers (`kubernetes.context`, else the current one)
    gpu-nodes      nodes carry vLLM's nodeSelector, or an autoscaler can make one from zero
                   (a Karpenter NodePool that can set those labels; a cluster-autoscaler is
                   running) -- WARN when only scale-from-zero is possible
    device-plugin  the NVIDIA device plugin runs (a DaemonSet named like it, in any
                   namespace, or nodes advertise `nvidia.com/gpu`); SKIP for CPU stacks
    storage        the cache's StorageClass exists, or a default one does when none is named
    pod-security   the namespace's Pod Security `enforce` level admits the stack's pods
    image          pull failures the cluster reports for the stack's images (registries
                   are not contacted from here: without such events the line says so)
    rbac           the caller may create every kind the stack declares, in its namespace

What a check looks for (selector, storage class, namespace, kinds, images) is read from the
objects the stack's target renders, so nothing here restates components/manifests.py.

The cluster is read through `kubectl get -o json` and `kubectl auth can-i` subprocesses,
not an HTTP client: kubectl already handles every kubeconfig a user has (exec credential
plugins such as gke-gcloud-auth-plugin and `aws eks get-token`, OIDC, client certs), as
the smoke and port-forward commands rely on. No mutating verb is ever run.

Exit status: 0 no check failed, 1 a check failed, 2 preflight could not start.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

from components.gpu_pool import pod_node_labels

Manifest = dict[str, Any]
Status = Literal["pass", "warn", "fail", "skip"]

DEFAULT_CLASS_ANNOTATIONS = (
    "storageclass.kubernetes.io/is-default-class",
    "storageclass.beta.kubernetes.io/is-default-class",
)
PSA_ENFORCE = "pod-security.kubernetes.io/enforce"
PSA_LEVELS = ("privileged", "baseline", "restricted")  # most to least permissive
GPU_RESOURCE = "nvidia.com/gpu"
CA_STATUS = ("kube-system", "cluster-autoscaler-status")
KARPENTER_NODEPOOLS = "nodepools.karpenter.sh"
# Labels Karpenter sets itself from the instance it picks: a NodePool that does not constrain
# them can still satisfy a pod selecting them (karpenter.sh docs, "Well-Known Labels").
KARPENTER_WELL_KNOWN = re.compile(
    r"^(karpenter\.k8s\.aws/|karpenter\.azure\.com/|karpenter\.sh/capacity-type$|node\.kubernetes\.io/instance-type$"
    r"|topology\.kubernetes\.io/(zone|region)$|kubernetes\.io/(arch|os)$)"
)


class PreflightError(RuntimeError):
    """Preflight could not run at all (exit 2)."""


class Unreachable(RuntimeError):
    """The cluster did not answer (no such context, connection refused, credentials)."""


class Forbidden(RuntimeError):
    """The caller may not read what a check needs."""


# ------------------------------------------------------------ the client seam


class Cluster(Protocol):
    def version(self) -> dict[str, Any]:
        """The API server's /version; raises Unreachable."""
        ...

    def get(
        self, resource: str, name: str | None = None, *, namespace: str | None = None, all_namespaces: bool = False
    ) -> Any:
        """The object (or List) as JSON; None when it, or its resource type, does not exist."""
        ...

    def can_i(self, verb: str, resource: str, namespace: str | None) -> bool: ...


_NOT_THERE = ("(NotFound)", "the server doesn't have a resource type", "could not find the requested resource")
_UNREACHABLE = (
    "Unable to connect to the server",
    "The connection to the server",
    "does not exist",  # error: context "x" does not exist
    "(Unauthorized)",
    "no configuration has been provided",
    "getting credentials",
)


class Kubectl:
    """The Cluster seam over `kubectl` subprocesses, against one context (None: the current one)."""

    def __init__(self, context: str | None = None, *, kubectl: str = "kubectl", timeout: float = 15.0) -> None:
        self.context, self.kubectl, self.timeout = context, kubectl, timeout
        if shutil.which(kubectl) is None:
            raise PreflightError(f"{kubectl} is not on PATH: install it (https://kubernetes.io/docs/tasks/tools/)")

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [self.kubectl, *args, f"--request-timeout={self.timeout:g}s"]
        if self.context:
            command[1:1] = ["--context", self.context]
        try:
            return subprocess.run(command, capture_output=True, text=True, timeout=self.timeout + 10, check=False)
        except subprocess.TimeoutExpired:
            raise Unreachable(f"kubectl gave no answer in {self.timeout + 10:g} s") from None

    @staticmethod
    def _raise_for(done: subprocess.CompletedProcess[str]) -> None:
        message = (done.stderr or done.stdout).strip().splitlines()
        text = message[-1] if message else f"kubectl exited with {done.returncode}"
        if "(Forbidden)" in text:
            raise Forbidden(text)
        if any(marker in text for marker in _UNREACHABLE):
            raise Unreachable(text)
        raise RuntimeError(text)

    def current_context(self) -> str | None:
        if self.context:
            return self.context
        done = subprocess.run([self.kubectl, "config", "current-context"], capture_output=True, text=True, check=False)
        return done.stdout.strip() or None if done.returncode == 0 else None

    def version(self) -> dict[str, Any]:
        done = self._run("get", "--raw", "/version")
        if done.returncode != 0:
            self._raise_for(done)
        return json.loads(done.stdout)

    def get(
        self, resource: str, name: str | None = None, *, namespace: str | None = None, all_namespaces: bool = False
    ) -> Any:
        args = ["get", resource, *([name] if name else []), "-o", "json"]
        if all_namespaces:
            args.append("--all-namespaces")
        elif namespace:
            args += ["--namespace", namespace]
        done = self._run(*args)
        if done.returncode != 0:
            if any(marker in done.stderr for marker in _NOT_THERE):
                return None
            self._raise_for(done)
        return json.loads(done.stdout)

    def can_i(self, verb: str, resource: str, namespace: str | None) -> bool:
        done = self._run("auth", "can-i", verb, resource, *(["--namespace", namespace] if namespace else []))
        answer = done.stdout.strip()
        if answer.startswith("yes"):
            return True
        if answer.startswith("no"):
            return False
        self._raise_for(done)
        return False


# ------------------------------------------------------------------ results


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""

    @property
    def ok(self) -> bool:
        return self.status != "fail"


@dataclass
class Report:
    stack: str
    context: str | None
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        for check in data["checks"]:
            check["ok"] = check["status"] != "fail"
        return data


# ------------------------------------------------- what the stack's objects need


@dataclass(frozen=True)
class Needs:
    """What the rendered objects ask of the cluster."""

    namespace: str
    creates_namespace: bool
    node_labels: dict[str, list[str]]  # label → the values any one of which will do (nodeSelector + affinity)
    tolerations: list[Manifest]
    wants_gpu: bool
    storage_classes: list[str | None]  # one per claim template; None: the cluster's default
    pod_specs: list[Manifest]
    images: list[str]
    kinds: list[tuple[str, str, str | None]]  # (resource for `kubectl auth can-i`, kind, namespace)

    @classmethod
    def of(cls, objects: list[Manifest]) -> Needs:
        namespaces = [o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"]
        workloads = [o for o in objects if o["kind"] in ("StatefulSet", "Deployment")]
        namespace = namespaces[0] if namespaces else next(o["metadata"]["namespace"] for o in workloads)
        pod_specs = [o["spec"]["template"]["spec"] for o in workloads]
        selector: dict[str, list[str]] = {}
        tolerations: list[Manifest] = []
        wants_gpu = False
        for spec in pod_specs:
            containers = spec.get("containers", [])
            if any(GPU_RESOURCE in c.get("resources", {}).get("limits", {}) for c in containers):
                wants_gpu = True
                selector = pod_node_labels(spec)
                tolerations = list(spec.get("tolerations") or [])
        claims = [t for o in workloads for t in o["spec"].get("volumeClaimTemplates", [])]
        images = sorted({c["image"] for s in pod_specs for c in [*s.get("initContainers", []), *s["containers"]]})
        kinds: dict[tuple[str, str, str | None], None] = {}
        for o in objects:
            kinds[(_resource_of(o), o["kind"], o["metadata"].get("namespace"))] = None
        return cls(
            namespace=namespace,
            creates_namespace=bool(namespaces),
            node_labels=selector,
            tolerations=tolerations,
            wants_gpu=wants_gpu,
            storage_classes=[c["spec"].get("storageClassName") for c in claims],
            pod_specs=pod_specs,
            images=images,
            kinds=list(kinds),
        )


def _resource_of(obj: Manifest) -> str:
    """`statefulsets.apps`, `networkpolicies.networking.k8s.io`, `secrets`: as `kubectl auth can-i` names them."""
    kind = obj["kind"].lower()
    plural = kind[:-1] + "ies" if kind.endswith("y") else kind + "es" if kind.endswith("s") else kind + "s"
    group = obj["apiVersion"].rpartition("/")[0]
    return f"{plural}.{group}" if group else plural


def _items(listing: Any) -> list[Manifest]:
    return list(listing.get("items", [])) if listing else []


def _selector_text(selector: dict[str, list[str]]) -> str:
    """`key=value`, or `key=a|b` where any of several will do."""
    return ",".join(f"{k}={'|'.join(v)}" for k, v in selector.items())


def _carries(node: Manifest, selector: dict[str, list[str]]) -> bool:
    labels = node["metadata"].get("labels") or {}
    return all(labels.get(key) in values for key, values in selector.items())


# --------------------------------------------------------------- the checks


def check_context(cluster: Cluster, context: str | None) -> Check:
    name = f"context {context}" if context else "the current context"
    try:
        version = cluster.version()
    except Unreachable as error:
        return Check(
            "context",
            "fail",
            f"{name} does not answer: {error}",
            "check `kubectl config get-contexts` and your cloud credentials; set `kubernetes.context` "
            "in the stack file (or pass --context) to the cluster's context",
        )
    return Check("context", "pass", f"{name} answers (Kubernetes {version.get('gitVersion', '?')})")


def _nodepool_can_carry(pool: Manifest, selector: dict[str, list[str]], wants_gpu: bool) -> bool:
    """Could Karpenter launch a node of this NodePool carrying every selector label (one of its values)?

    Modelled on Karpenter's scheduling (karpenter.sh docs, "NodePools: spec.template"): a
    label comes from `template.metadata.labels` or a requirement; well-known labels Karpenter
    sets from the chosen instance may be left unconstrained. A pool that rules GPUs out
    (`instance-gpu-count DoesNotExist`, the usual CPU pool) launches no GPU node.
    """
    template = pool.get("spec", {}).get("template", {})
    labels = template.get("metadata", {}).get("labels", {}) or {}
    requirements = {r["key"]: r for r in template.get("spec", {}).get("requirements", [])}
    if wants_gpu and any("gpu" in key and r.get("operator") == "DoesNotExist" for key, r in requirements.items()):
        return False
    for key, wanted in selector.items():
        if key in labels:
            if labels[key] not in wanted:
                return False
            continue
        requirement = requirements.get(key)
        if requirement is None:
            if not KARPENTER_WELL_KNOWN.match(key):
                return False
            continue
        if not any(_meets(requirement, value) for value in wanted):
            return False
    return True


def _meets(requirement: Manifest, value: str) -> bool:
    """Does a label value meet a NodePool requirement (core/v1 NodeSelectorRequirement operators)?"""
    operator, values = requirement.get("operator"), requirement.get("values", [])
    if operator == "In":
        return value in values
    if operator == "NotIn":
        return value not in values
    if operator in ("Gt", "Lt") and value.isdigit() and values and str(values[0]).lstrip("-").isdigit():
        return int(value) > int(values[0]) if operator == "Gt" else int(value) < int(values[0])
    return operator == "Exists"


def _autoscaler_groups(status: Manifest) -> list[str]:
    text = str(status.get("data", {}).get("status", ""))
    return sorted(set(re.findall(r"(?m)^\s*-?\s*[Nn]ame:\s*\"?([^\s\"]+)", text)))


def check_gpu_nodes(cluster: Cluster, needs: Needs) -> Check:
    nodes = _items(cluster.get("nodes"))
    if not needs.node_labels:
        if not needs.wants_gpu:
            ready = [n for n in nodes if _ready(n)]
            if ready:
                return Check("gpu-nodes", "pass", f"no GPU asked for; {len(ready)} node(s) Ready")
            return Check("gpu-nodes", "fail", "no GPU asked for, but no node is Ready", "add a node to the cluster")
        return Check(
            "gpu-nodes",
            "warn",
            "vLLM asks for a GPU with no nodeSelector: it lands on any GPU node",
            "set `kubernetes.nodeSelector` to the GPU pool's labels",
        )
    wanted = _selector_text(needs.node_labels)
    matching = [n for n in nodes if _carries(n, needs.node_labels)]
    untolerated = [_untolerated(n, needs.tolerations) for n in matching]
    if matching and all(untolerated):
        taint = untolerated[0][0]
        return Check(
            "gpu-nodes",
            "fail",
            f"{len(matching)} node(s) carry {wanted}, but every one has a taint vLLM does not tolerate: "
            f"{taint.get('key')}={taint.get('value', '')}:{taint.get('effect')}",
            "add it to `kubernetes.tolerations` (e.g. `{key: " + str(taint.get("key")) + ", operator: Exists}`)",
        )
    if matching:
        names = ", ".join(n["metadata"]["name"] for n in matching[:3]) + (" …" if len(matching) > 3 else "")
        return Check("gpu-nodes", "pass", f"{len(matching)} node(s) carry {wanted}: {names}")
    pools = [
        p
        for p in _items(cluster.get(KARPENTER_NODEPOOLS))
        if _nodepool_can_carry(p, needs.node_labels, needs.wants_gpu)
    ]
    if pools:
        names = ", ".join(p["metadata"]["name"] for p in pools)
        return Check(
            "gpu-nodes",
            "warn",
            f"no node carries {wanted} now; Karpenter NodePool(s) {names} can launch one (scale from zero)",
            "expect the first `pulumi up` to wait for a node to launch and the driver to install",
        )
    status = cluster.get("configmap", CA_STATUS[1], namespace=CA_STATUS[0])
    if status:
        groups = ", ".join(_autoscaler_groups(status)) or "none listed"
        return Check(
            "gpu-nodes",
            "warn",
            f"no node carries {wanted} now; a cluster-autoscaler runs (node groups: {groups}), but preflight "
            "cannot see the labels a group at zero would give its nodes",
            f"make sure a GPU node group with min size 0 puts {wanted} on its node template "
            "(GKE: a node pool with `--accelerator` and autoscaling; EKS: the node group's labels and the "
            "`k8s.io/cluster-autoscaler/node-template/label/...` tags)",
        )
    return Check(
        "gpu-nodes",
        "fail",
        f"no node carries {wanted}, and no autoscaler (Karpenter NodePool, cluster-autoscaler) can make one",
        "add a GPU node pool whose nodes carry these labels, or set `kubernetes.gpuPool.preset` to your "
        "cluster's kind (gke, karpenter, nodeGroup) or `kubernetes.nodeSelector` to the labels your GPU nodes "
        "have (`kubectl get nodes --show-labels`)",
    )


def _tolerates(toleration: Manifest, taint: Manifest) -> bool:
    """As the scheduler matches them (k8s.io/api/core/v1 toleration.go, ToleratesTaint)."""
    if toleration.get("effect") and toleration["effect"] != taint.get("effect"):
        return False
    if toleration.get("key") and toleration["key"] != taint.get("key"):
        return False
    if toleration.get("operator", "Equal") == "Exists":
        return True
    return bool(toleration.get("key")) and toleration.get("value", "") == taint.get("value", "")


def _untolerated(node: Manifest, tolerations: list[Manifest]) -> list[Manifest]:
    taints = node.get("spec", {}).get("taints", [])
    return [
        t
        for t in taints
        if t.get("effect") in ("NoSchedule", "NoExecute") and not any(_tolerates(tol, t) for tol in tolerations)
    ]


def _ready(node: Manifest) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in node.get("status", {}).get("conditions", [])
    )


def check_device_plugin(cluster: Cluster, needs: Needs) -> Check:
    if not needs.wants_gpu:
        return Check("device-plugin", "skip", "the stack asks for no GPU")
    fix = (
        "install NVIDIA's device plugin or GPU Operator (`helm install gpu-operator nvidia/gpu-operator "
        "-n gpu-operator --create-namespace`); GKE installs its own on node pools with `--accelerator`"
    )
    try:
        daemonsets = _items(cluster.get("daemonsets", all_namespaces=True))
    except Forbidden as error:
        daemonsets = []
        forbidden: str | None = str(error)
    else:
        forbidden = None
    plugins = [d for d in daemonsets if "nvidia" in d["metadata"]["name"] and "device-plugin" in d["metadata"]["name"]]
    if plugins:
        plugin = max(plugins, key=lambda d: d.get("status", {}).get("numberReady", 0))
        where = f"{plugin['metadata']['namespace']}/{plugin['metadata']['name']}"
        status = plugin.get("status", {})
        desired, ready = status.get("desiredNumberScheduled", 0), status.get("numberReady", 0)
        if desired == 0:
            return Check(
                "device-plugin", "pass", f"{where} is installed; on no node yet (it starts with the first GPU node)"
            )
        if ready < desired:
            return Check(
                "device-plugin",
                "warn",
                f"{where}: {ready} of {desired} pods ready",
                f"`kubectl -n {plugin['metadata']['namespace']} describe daemonset {plugin['metadata']['name']}`",
            )
        return Check("device-plugin", "pass", f"{where}: {ready} of {desired} pods ready")
    advertising = [
        n for n in _items(cluster.get("nodes")) if GPU_RESOURCE in n.get("status", {}).get("allocatable", {})
    ]
    if advertising:
        return Check("device-plugin", "pass", f"{len(advertising)} node(s) advertise {GPU_RESOURCE}")
    if forbidden:
        return Check("device-plugin", "warn", f"cannot list DaemonSets to look for it: {forbidden}", fix)
    return Check(
        "device-plugin", "fail", f"no nvidia device-plugin DaemonSet, and no node advertises {GPU_RESOURCE}", fix
    )


def _is_default(storage_class: Manifest) -> bool:
    annotations = storage_class["metadata"].get("annotations") or {}
    return any(annotations.get(key) == "true" for key in DEFAULT_CLASS_ANNOTATIONS)


def check_storage(cluster: Cluster, needs: Needs) -> Check:
    if not needs.storage_classes:
        return Check("storage", "skip", "the stack claims no volume")
    classes = _items(cluster.get("storageclasses"))
    names = sorted(c["metadata"]["name"] for c in classes)
    listed = ", ".join(names) or "none"
    for wanted in needs.storage_classes:
        if wanted is None:
            defaults = [c["metadata"]["name"] for c in classes if _is_default(c)]
            if not defaults:
                return Check(
                    "storage",
                    "fail",
                    f"the cache names no StorageClass and the cluster has no default one (EKS ≥ 1.30 has none); "
                    f"classes: {listed}",
                    "set `kubernetes.cache.storageClass` to one of them, or mark one default: "
                    "`kubectl annotate storageclass NAME storageclass.kubernetes.io/is-default-class=true`",
                )
            return Check("storage", "pass", f"the cache uses the default StorageClass {defaults[-1]}")
        if wanted not in names:
            return Check(
                "storage",
                "fail",
                f"StorageClass {wanted} does not exist; classes: {listed}",
                "set `kubernetes.cache.storageClass` to one of them",
            )
    return Check("storage", "pass", f"StorageClass {', '.join(c for c in needs.storage_classes if c)} exists")


def _level_needed(spec: Manifest) -> str:
    """The strictest Pod Security level this pod spec meets.

    A subset of the Pod Security Standards (kubernetes.io/docs/concepts/security/pod-security-standards):
    baseline forbids privileged and host namespaces, ports and paths; restricted also requires
    runAsNonRoot, no privilege escalation, all capabilities dropped and a seccomp profile.
    """
    containers = [*spec.get("initContainers", []), *spec.get("containers", [])]
    pod = spec.get("securityContext") or {}
    contexts = [c.get("securityContext") or {} for c in containers]
    if (
        spec.get("hostNetwork")
        or spec.get("hostPID")
        or spec.get("hostIPC")
        or any("hostPath" in v for v in spec.get("volumes", []))
        or any(c.get("privileged") for c in contexts)
        or any(p.get("hostPort") for c in containers for p in c.get("ports", []))
    ):
        return "privileged"
    pod_seccomp = (pod.get("seccompProfile") or {}).get("type")
    restricted = all(
        (c.get("runAsNonRoot", pod.get("runAsNonRoot")) is True)
        and c.get("runAsUser", pod.get("runAsUser")) != 0
        and c.get("allowPrivilegeEscalation") is False
        and "ALL" in ((c.get("capabilities") or {}).get("drop") or [])
        and (c.get("seccompProfile") or {}).get("type", pod_seccomp) in ("RuntimeDefault", "Localhost")
        for c in contexts
    )
    return "restricted" if restricted else "baseline"


def check_pod_security(cluster: Cluster, needs: Needs) -> Check:
    needed = min((_level_needed(s) for s in needs.pod_specs), key=PSA_LEVELS.index, default="restricted")
    namespace = cluster.get("namespace", needs.namespace)
    if namespace is None:
        if needs.creates_namespace:
            return Check(
                "pod-security",
                "pass",
                f"namespace {needs.namespace} does not exist yet; the stack creates it (its pods need {needed})",
            )
        return Check(
            "pod-security",
            "fail",
            f"namespace {needs.namespace} does not exist and the stack does not create it",
            f"`kubectl create namespace {needs.namespace}`, or set `kubernetes.createNamespace: true`",
        )
    enforce = (namespace["metadata"].get("labels") or {}).get(PSA_ENFORCE, "privileged")
    if enforce not in PSA_LEVELS:
        return Check("pod-security", "warn", f"namespace {needs.namespace} enforces an unknown level {enforce!r}")
    if PSA_LEVELS.index(enforce) > PSA_LEVELS.index(needed):
        return Check(
            "pod-security",
            "fail",
            f"namespace {needs.namespace} enforces Pod Security {enforce!r}; the stack's pods need {needed!r} "
            "(vLLM's image runs as root)",
            f"`kubectl label namespace {needs.namespace} {PSA_ENFORCE}={needed} --overwrite` (if your cluster's "
            "policy allows), or deploy to a namespace that admits it",
        )
    return Check("pod-security", "pass", f"namespace {needs.namespace} enforces {enforce!r}; the pods need {needed!r}")


_PULL_FAILURE = re.compile(r"ErrImagePull|ImagePullBackOff|[Ff]ailed to pull image|pull access denied|not found")


def check_image(cluster: Cluster, needs: Needs) -> Check:
    try:
        events = _items(cluster.get("events", namespace=needs.namespace))
    except Forbidden as error:
        return Check("image", "skip", f"cannot read events in {needs.namespace}: {error}")
    failures = [
        e
        for e in events
        if e.get("reason") in ("Failed", "BackOff", "ErrImagePull")
        and _PULL_FAILURE.search(e.get("message", ""))
        and any(image in e.get("message", "") for image in needs.images)
    ]
    if failures:
        message = failures[-1]["message"]
        return Check(
            "image",
            "warn",
            f"the cluster reports pull failures in {needs.namespace}: {message}",
            "publish the image (or set `wrapper.image` / `vllm.image` to one the nodes can pull; a private "
            "registry needs imagePullSecrets on the service account)",
        )
    return Check(
        "image",
        "skip",
        f"not checked: preflight contacts no registry, and {needs.namespace} reports no pull failure for "
        + ", ".join(needs.images),
    )


def check_rbac(cluster: Cluster, needs: Needs) -> Check:
    denied = [
        f"create {resource}" + (f" in {namespace}" if namespace else "")
        for resource, _kind, namespace in needs.kinds
        if not cluster.can_i("create", resource, namespace)
    ]
    if denied:
        return Check(
            "rbac",
            "fail",
            "you may not " + "; ".join(denied),
            "ask a cluster admin for a Role (or ClusterRole) granting these, bound to you in "
            f"{needs.namespace}; check with `kubectl auth can-i create RESOURCE -n {needs.namespace}`",
        )
    return Check("rbac", "pass", f"you may create all {len(needs.kinds)} kinds the stack declares")


CHECKS = (check_gpu_nodes, check_device_plugin, check_storage, check_pod_security, check_image, check_rbac)


def run_checks(cluster: Cluster, needs: Needs, context: str | None) -> list[Check]:
    """The context check first; when it fails, the others cannot run and are not listed."""
    reached = check_context(cluster, context)
    checks = [reached]
    if not reached.ok:
        return checks
    for check in CHECKS:
        try:
            checks.append(check(cluster, needs))
        except Forbidden as error:
            name = check.__name__.removeprefix("check_").replace("_", "-")
            checks.append(Check(name, "warn", f"could not check: {error}", "run preflight with read access to it"))
        except Unreachable as error:
            checks.append(
                Check(check.__name__.removeprefix("check_"), "fail", f"the cluster stopped answering: {error}")
            )
    return checks


# ------------------------------------------------------------------- output


def format_report(report: Report) -> str:
    lines = [f"preflight {report.stack} on {report.context or 'the current context'}"]
    for check in report.checks:
        lines.append(f"  {check.status.upper():<4}  {check.name:<13} {check.detail}")
        if check.fix and check.status in ("warn", "fail"):
            lines.append(f"        {'':<13} fix: {check.fix}")
    counts = {s: sum(c.status == s for c in report.checks) for s in ("pass", "warn", "fail")}
    verdict = "ok" if report.ok else "FAILED"
    lines.append(f"{verdict}: {counts['pass']} passed, {counts['warn']} warned, {counts['fail']} failed")
    return "\n".join(lines)
