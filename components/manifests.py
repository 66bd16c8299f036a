"""Every Kubernetes object of a stack, built as a plain camelCase manifest dict.

What the objects carry comes from the serving plan (`components.plan`); this module only spells
it the Kubernetes way. The one place objects are built: the Pulumi components declare these dicts as they
are, `vllm-deploy render` prints them, and the Helm chart is tested against them.
Secret values are whatever the caller passes (Pulumi Outputs, or a redaction mark),
so nothing here ever sees a plain secret it could leak.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

from components import gpu_pool, observability
from components.config import StackConfig
from components.plan import VLLM_PORT, ServingPlan, serving_plan
from components.secrets import SECRET_ENV
from components.wrapper_env import API_KEY, WRAPPER_API_KEY

CACHE_MOUNT = "/models"
REDACTED = "<redacted>"
SECRET_DIGEST = "checksum/secrets"
PRESTOP_SLEEP_SECONDS = 10
STARTUP_PROBE_PERIOD_SECONDS = 10
# pulumi-kubernetes reads these annotations (provider/pkg/metadata/annotations.go).
SKIP_AWAIT = "pulumi.com/skipAwait"
PATCH_FORCE = "pulumi.com/patchForce"
# Pod Security Admission: the namespace enforces what every pod in it meets (vLLM's image runs as
# root, so `baseline`) and audits `restricted`, which the wrapper meets.
POD_SECURITY_LABELS = {
    "pod-security.kubernetes.io/enforce": "baseline",
    "pod-security.kubernetes.io/warn": "baseline",
    "pod-security.kubernetes.io/audit": "restricted",
}

Manifest = dict[str, Any]


@dataclass(frozen=True)
class Names:
    release: str
    namespace: str

    @property
    def vllm(self) -> str:
        return self.release

    @property
    def headless(self) -> str:
        return f"{self.release}-headless"

    @property
    def wrapper(self) -> str:
        return f"{self.release}-wrapper"

    @property
    def secret(self) -> str:
        return f"{self.release}-secrets"

    @property
    def scaler(self) -> str:
        return f"{self.release}-scaler"

    @property
    def activity_lease(self) -> str:
        # The wrapper's default for VLLM_K8S_LEASE: `<statefulset>-activity`.
        return f"{self.vllm}-activity"

    @property
    def vllm_url(self) -> str:
        return f"http://{self.vllm}.{self.namespace}.svc.cluster.local:{VLLM_PORT}/v1"

    def vllm_urls(self, replicas: int) -> str:
        """What the wrapper routes over: with one replica the Service; with several, each pod by its
        stable DNS name under the headless Service. The headless Service publishes not-ready pods
        too, so the wrapper's own health probes, failover and ejection route around a pod that is not
        ready, and a pod not created yet has no record (wrapper/routing/README.md); no API access needed."""
        if replicas <= 1:
            return self.vllm_url
        host = f"{self.headless}.{self.namespace}.svc.cluster.local"
        return ",".join(f"http://{self.vllm}-{i}.{host}:{VLLM_PORT}/v1" for i in range(replicas))


def names(config: StackConfig) -> Names:
    return Names(config.kubernetes.release_name, config.kubernetes.namespace)


@dataclass
class StackManifests:
    """The objects of one stack, grouped by the component that owns them."""

    namespace: Manifest | None
    secret: Manifest
    vllm: list[Manifest] = field(default_factory=list)
    wrapper: list[Manifest] = field(default_factory=list)
    scaler: list[Manifest] = field(default_factory=list)
    monitoring: list[Manifest] = field(default_factory=list)

    def all(self) -> list[Manifest]:
        head = [self.namespace] if self.namespace else []
        return [*head, self.secret, *self.vllm, *self.wrapper, *self.scaler, *self.monitoring]


# ------------------------------------------------------------------- derived


def termination_grace_seconds(plan: ServingPlan) -> int:
    return PRESTOP_SLEEP_SECONDS + plan.shutdown_timeout + 15


def shm_size(plan: ServingPlan) -> str:
    # NCCL moves tensor-parallel activations through /dev/shm; one GPU needs little.
    tp = plan.gpu.tensor_parallel_size
    return "2Gi" if tp == 1 else f"{8 * tp}Gi"


def app_version(config: StackConfig) -> str:
    image = config.vllm.image
    return image.rsplit("@", 1)[-1][:63].replace(":", "-") if "@" in image else image.rsplit(":", 1)[-1]


def labels(config: StackConfig, component: str, versioned: bool = True) -> dict[str, str]:
    """`versioned=False` for Services: an image bump must not update (and so re-await) them."""
    version = {"app.kubernetes.io/version": app_version(config)} if versioned else {}
    return {
        **selector(config, component),
        **version,
        "app.kubernetes.io/part-of": "vllm-deploy",
        "app.kubernetes.io/managed-by": "pulumi",
    }


def selector(config: StackConfig, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "vllm-deploy",
        "app.kubernetes.io/instance": config.kubernetes.release_name,
        "app.kubernetes.io/component": component,
    }


def _metadata(config: StackConfig, name: str, component: str, **extra: Any) -> Manifest:
    return {"name": name, "namespace": config.kubernetes.namespace, "labels": labels(config, component), **extra}


def _secret_env(name: str, secret: str, key: str, optional: bool = False) -> Manifest:
    ref: Manifest = {"name": secret, "key": key}
    if optional:
        ref["optional"] = True
    return {"name": name, "valueFrom": {"secretKeyRef": ref}}


def _http_probe(path: str, port: str, period: int, failures: int, timeout: int) -> Manifest:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": timeout,
    }


def _checkov_skips(reasons: dict[str, str]) -> dict[str, str]:
    """Checks that cannot apply to an object, each with its reason, as checkov reads them."""
    return {f"checkov.io/skip{i}": f"{check}={why}" for i, (check, why) in enumerate(sorted(reasons.items()), 1)}


def _image_skips(image: str) -> dict[str, str]:
    skips = {
        # Pinned tags never move, and re-pulling a 10 GB image on every wake would cost minutes.
        "CKV_K8S_15": "pinned image tags are pulled IfNotPresent",
        # vLLM and the wrapper read their keys from the environment (VLLM_API_KEY, HF_TOKEN).
        "CKV_K8S_35": "the server reads its keys from environment variables",
    }
    if "@sha256:" not in image:
        skips["CKV_K8S_43"] = "pinned by version tag; set the image to a @sha256 digest to pin by content"
    return skips


_RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
}


# -------------------------------------------------------------------- objects


def namespace(config: StackConfig) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": config.kubernetes.namespace,
            "labels": {**labels(config, "namespace"), **POD_SECURITY_LABELS},
        },
    }


def secret(config: StackConfig, values: dict[str, Any]) -> Manifest:
    """`values`: stack secret name → value (an Output under Pulumi, REDACTED when rendering)."""
    data = {SECRET_ENV[k]: v for k, v in values.items() if k in SECRET_ENV and v is not None}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(config, names(config).secret, "secrets"),
        "type": "Opaque",
        "stringData": data,
    }


def _vllm_resources(config: StackConfig, plan: ServingPlan) -> Manifest:
    if config.vllm.resources:
        bounds = config.vllm.resources
        requests = {"cpu": bounds.requests.cpu, "memory": bounds.requests.memory}
        limits = {"cpu": bounds.limits.cpu, "memory": bounds.limits.memory}
    else:
        n = plan.gpu.tensor_parallel_size
        requests = {"cpu": str(4 * n), "memory": f"{24 * n}Gi"}
        limits = {"cpu": str(8 * n), "memory": f"{48 * n}Gi"}
    if not plan.gpu.is_cpu:
        # Extended resources must be requested and limited alike.
        requests["nvidia.com/gpu"] = limits["nvidia.com/gpu"] = str(plan.gpu.count)
    return {"requests": requests, "limits": limits}


def _vllm_env(config: StackConfig, plan: ServingPlan) -> list[Manifest]:
    secret_name = names(config).secret
    api_key, hf_token = SECRET_ENV["vllmApiKey"], SECRET_ENV["hfToken"]
    env = [
        {"name": "HF_HOME", "value": f"{CACHE_MOUNT}/huggingface"},
        {"name": "VLLM_NO_USAGE_STATS", "value": "1"},
        {"name": "DO_NOT_TRACK", "value": "1"},
        # vLLM reads its API key from VLLM_API_KEY, so it never appears in the args.
        _secret_env(api_key, secret_name, api_key),
        _secret_env(hf_token, secret_name, hf_token, optional=True),
    ]
    if plan.gpu.is_cpu:
        env.append({"name": "VLLM_CPU_KVCACHE_SPACE", "value": "1"})
        # vLLM's CPU build binds one OpenMP thread per core it can see ("auto"): every host core,
        # not the container's CPU limit, so a laptop's kind node throttles it. Unbound, it runs
        # OMP_NUM_THREADS threads: the CPU limit, rounded up by the downward API (divisor 1).
        env += [
            {"name": "VLLM_CPU_OMP_THREADS_BIND", "value": "nobind"},
            {
                "name": "OMP_NUM_THREADS",
                "valueFrom": {"resourceFieldRef": {"containerName": "vllm", "resource": "limits.cpu", "divisor": "1"}},
            },
        ]
    return env


def _gpu_placement(config: StackConfig, plan: ServingPlan) -> Manifest:
    placement = gpu_pool.placement(gpu_pool.node_labels(config))
    if plan.gpu.spec is None:
        if config.kubernetes.tolerations:
            placement["tolerations"] = [t.model_dump(exclude_none=True) for t in config.kubernetes.tolerations]
        return placement
    tolerations = (
        [t.model_dump(exclude_none=True) for t in config.kubernetes.tolerations]
        if config.kubernetes.tolerations is not None
        else [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    )
    return {**placement, "tolerations": tolerations}


def cache_claim_name(config: StackConfig, plan: ServingPlan) -> str:
    """The cache's claim template is named by its size and class, so a change to either replaces the
    StatefulSet (volumeClaimTemplates are immutable) with one whose pods get new, right-sized
    claims, instead of remounting the retained claims of the old name at their old size."""
    name = f"model-cache-{plan.cache_size.lower().replace('.', '-')}"
    if storage_class := gpu_pool.cache_storage_class(config):
        name += "-" + hashlib.sha256(storage_class.encode()).hexdigest()[:6]
    return name


def vllm_statefulset(config: StackConfig, plan: ServingPlan, secret_digest: Any = REDACTED) -> Manifest:
    n = names(config)
    budget = plan.startup_budget_seconds
    claim = cache_claim_name(config, plan)
    cache_claim: Manifest = {
        "metadata": {"name": claim},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": plan.cache_size}},
        },
    }
    if storage_class := gpu_pool.cache_storage_class(config):
        cache_claim["spec"]["storageClassName"] = storage_class
    container = {
        "name": "vllm",
        "image": config.vllm.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["python3", "-m", "vllm.entrypoints.openai.api_server"],
        "args": list(plan.vllm_args),
        "env": _vllm_env(config, plan),
        "ports": [{"name": "http", "containerPort": VLLM_PORT, "protocol": "TCP"}],
        "resources": _vllm_resources(config, plan),
        # /health is open; /v1/* needs the API key, so probes never touch it.
        "startupProbe": _http_probe(
            "/health", "http", STARTUP_PROBE_PERIOD_SECONDS, math.ceil(budget / STARTUP_PROBE_PERIOD_SECONDS), 5
        ),
        "readinessProbe": _http_probe("/health", "http", 10, 3, 5),
        "livenessProbe": _http_probe("/health", "http", 20, 6, 10),
        # Endpoints drop the pod before vLLM gets SIGTERM, then vLLM drains in-flight requests.
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRESTOP_SLEEP_SECONDS)]}}},
        "volumeMounts": [
            {"name": claim, "mountPath": CACHE_MOUNT},
            {"name": "dshm", "mountPath": "/dev/shm"},
        ],
        "securityContext": dict(_RESTRICTED_CONTAINER),
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _metadata(
            config,
            n.vllm,
            "vllm",
            annotations=_checkov_skips(
                {
                    "CKV_K8S_40": "the vllm/vllm-openai image runs as root",
                    "CKV_K8S_23": "the vllm/vllm-openai image runs as root",
                    "CKV_K8S_22": "vLLM writes compile caches under its home directory",
                    **_image_skips(config.vllm.image),
                }
            )
            # Always on, the stack owns spec.replicas again: force the apply over the field manager
            # a scaler's /scale PATCH left on it (pulumi-kubernetes await.go patchForce).
            | ({} if plan.wrapper_scales else {PATCH_FORCE: "true"}),
        ),
        "spec": {
            "serviceName": n.headless,
            "replicas": plan.replicas,
            "podManagementPolicy": "Parallel",
            "persistentVolumeClaimRetentionPolicy": {"whenScaled": "Retain", "whenDeleted": "Retain"},
            "selector": {"matchLabels": selector(config, "vllm")},
            "template": {
                "metadata": {"labels": labels(config, "vllm"), "annotations": {SECRET_DIGEST: secret_digest}},
                "spec": {
                    "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": termination_grace_seconds(plan),
                    "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
                    **_gpu_placement(config, plan),
                    "containers": [container],
                    "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": shm_size(plan)}}],
                },
            },
            "volumeClaimTemplates": [cache_claim],
        },
    }


def _service(config: StackConfig, name: str, component: str, port: int, headless: bool = False) -> Manifest:
    spec: Manifest = {
        "selector": selector(config, component),
        "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}],
    }
    if headless:
        # The StatefulSet's governing Service: stable pod DNS even while a pod is loading.
        spec |= {"clusterIP": "None", "publishNotReadyAddresses": True}
    else:
        spec["type"] = "ClusterIP"
    metadata = {
        "name": name,
        "namespace": config.kubernetes.namespace,
        "labels": labels(config, component, versioned=False),
    }
    if component == "vllm":
        # pulumi-kubernetes awaits a Service until its Endpoints list a ready address
        # (provider/pkg/await/service.go, 10 min by default): for vLLM that proves nothing the
        # StatefulSet's longer await does not, and at zero replicas it fails every later update.
        metadata["annotations"] = {SKIP_AWAIT: "true"}
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata, "spec": spec}


def vllm_network_policy(config: StackConfig) -> Manifest:
    """Only the wrapper's pods reach vLLM."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(config, names(config).vllm, "vllm"),
        "spec": {
            "podSelector": {"matchLabels": selector(config, "vllm")},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": selector(config, "wrapper")}}],
                    "ports": [{"protocol": "TCP", "port": VLLM_PORT}],
                }
            ],
        },
    }


def wrapper_env(config: StackConfig, plan: ServingPlan) -> list[Manifest]:
    n = names(config)
    # Every replica that can exist: a pod not created yet has no DNS record and is routed around.
    plain = plan.wrapper.environment(base_url=n.vllm_urls(config.vllm.max_replicas), listen=True)
    env = [{"name": name, "value": value} for name, value in plain.items()]
    env += [
        _secret_env(API_KEY, n.secret, SECRET_ENV["vllmApiKey"]),
        _secret_env(WRAPPER_API_KEY, n.secret, SECRET_ENV["wrapperApiKey"], optional=True),
    ]
    if plan.wrapper_scales:
        scaler = plan.wrapper.scaler_environment(n.namespace, n.vllm)
        env += [{"name": name, "value": value} for name, value in scaler.items()]
    return env


def wrapper_deployment(config: StackConfig, plan: ServingPlan, secret_digest: Any = REDACTED) -> Manifest:
    n, w = names(config), config.wrapper
    pod_spec: Manifest = {
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": selector(config, "wrapper")},
            }
        ],
        "containers": [
            {
                "name": "wrapper",
                "image": w.image,
                "imagePullPolicy": "IfNotPresent",
                "env": wrapper_env(config, plan),
                "ports": [{"name": "http", "containerPort": w.port, "protocol": "TCP"}],
                "resources": {
                    "requests": {"cpu": w.resources.requests.cpu, "memory": w.resources.requests.memory},
                    "limits": {"cpu": w.resources.limits.cpu, "memory": w.resources.limits.memory},
                },
                # The wrapper answers /health itself even while vLLM sleeps or loads.
                "readinessProbe": _http_probe("/health", "http", 5, 3, 3),
                "livenessProbe": _http_probe("/health", "http", 10, 3, 5),
                "securityContext": {**_RESTRICTED_CONTAINER, "readOnlyRootFilesystem": True},
            }
        ],
    }
    if plan.wrapper_scales:
        pod_spec["serviceAccountName"] = n.scaler
    else:
        pod_spec["automountServiceAccountToken"] = False
    skips = _image_skips(w.image)
    if plan.wrapper_scales:
        skips["CKV_K8S_38"] = "the wrapper scales the vLLM StatefulSet through the API server"
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(config, n.wrapper, "wrapper", annotations=_checkov_skips(skips)),
        "spec": {
            "replicas": w.replicas.min,
            "selector": {"matchLabels": selector(config, "wrapper")},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": labels(config, "wrapper"), "annotations": {SECRET_DIGEST: secret_digest}},
                "spec": pod_spec,
            },
        },
    }


def wrapper_hpa(config: StackConfig) -> Manifest:
    n, w = names(config), config.wrapper
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(config, n.wrapper, "wrapper"),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": n.wrapper},
            "minReplicas": w.replicas.min,
            "maxReplicas": w.replicas.max,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": w.target_cpu_utilization},
                    },
                }
            ],
        },
    }


def wrapper_pdb(config: StackConfig) -> Manifest:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(config, names(config).wrapper, "wrapper"),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(config, "wrapper")}},
    }


def wrapper_network_policy(config: StackConfig) -> Manifest:
    """Clients (ingress controllers, port-forward, other apps) reach the wrapper's port only."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(config, names(config).wrapper, "wrapper"),
        "spec": {
            "podSelector": {"matchLabels": selector(config, "wrapper")},
            "policyTypes": ["Ingress"],
            "ingress": [{"ports": [{"protocol": "TCP", "port": config.wrapper.port}]}],
        },
    }


def scaler_rbac(config: StackConfig) -> list[Manifest]:
    """What the wrapper needs to scale vLLM to zero and back, by name, and nothing wider.

    No `patch` on `statefulsets`: that verb can rewrite the pod template (any image, as root, on a
    GPU node, with the HF token in its environment). The shared activity record lives in a Lease
    this program creates, so the Role needs no `create` (which cannot be limited by name).
    """
    n = names(config)
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": _metadata(config, n.scaler, "wrapper"),
            "automountServiceAccountToken": True,
        },
        {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": _metadata(config, n.activity_lease, "wrapper"),
            "spec": {},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _metadata(config, n.scaler, "wrapper"),
            "rules": [
                {"apiGroups": ["apps"], "resources": ["statefulsets"], "resourceNames": [n.vllm], "verbs": ["get"]},
                {
                    "apiGroups": ["apps"],
                    "resources": ["statefulsets/scale"],
                    "resourceNames": [n.vllm],
                    "verbs": ["get", "patch"],
                },
                {
                    "apiGroups": ["coordination.k8s.io"],
                    "resources": ["leases"],
                    "resourceNames": [n.activity_lease],
                    "verbs": ["get", "patch"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _metadata(config, n.scaler, "wrapper"),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": n.scaler},
            "subjects": [{"kind": "ServiceAccount", "name": n.scaler, "namespace": n.namespace}],
        },
    ]


def build(
    config: StackConfig, secret_values: dict[str, Any] | None = None, secret_digest: Any = REDACTED
) -> StackManifests:
    """All objects of a Kubernetes stack. Without `secret_values`, Secret data is REDACTED.

    `secret_digest` goes on the pod templates (`checksum/secrets`) so a rotated key restarts them.
    """
    if secret_values is None:
        secret_values = {k: REDACTED for k in config.secrets_present}
    n, plan = names(config), serving_plan(config)
    return StackManifests(
        namespace=namespace(config) if config.kubernetes.create_namespace else None,
        secret=secret(config, secret_values),
        vllm=[
            vllm_statefulset(config, plan, secret_digest),
            _service(config, n.headless, "vllm", VLLM_PORT, headless=True),
            _service(config, n.vllm, "vllm", VLLM_PORT),
            vllm_network_policy(config),
        ],
        wrapper=[
            wrapper_deployment(config, plan, secret_digest),
            _service(config, n.wrapper, "wrapper", config.wrapper.port),
            wrapper_hpa(config),
            wrapper_pdb(config),
            wrapper_network_policy(config),
        ],
        scaler=scaler_rbac(config) if plan.wrapper_scales else [],
        monitoring=observability.build(config.observability, observability.release_of(config)),
    )


def port_forward_command(config: StackConfig) -> str:
    n = names(config)
    port = config.wrapper.port
    return f"kubectl port-forward -n {n.namespace} svc/{n.wrapper} {port}:{port}"
