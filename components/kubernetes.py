"""The Kubernetes target as Pulumi components: one ComponentResource per concept.

Each component declares the manifest dicts `components.manifests` built, unchanged,
so `pulumi up` and `vllm-deploy render` cannot disagree.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components import manifests
from components.config import StackConfig
from components.manifests import Manifest
from components.plan import serving_plan

_CLASSES: dict[tuple[str, str], Any] = {
    ("v1", "Namespace"): k8s.core.v1.Namespace,
    ("v1", "Secret"): k8s.core.v1.Secret,
    ("v1", "ConfigMap"): k8s.core.v1.ConfigMap,
    ("v1", "Service"): k8s.core.v1.Service,
    ("v1", "ServiceAccount"): k8s.core.v1.ServiceAccount,
    ("apps/v1", "StatefulSet"): k8s.apps.v1.StatefulSet,
    ("apps/v1", "Deployment"): k8s.apps.v1.Deployment,
    ("autoscaling/v2", "HorizontalPodAutoscaler"): k8s.autoscaling.v2.HorizontalPodAutoscaler,
    ("policy/v1", "PodDisruptionBudget"): k8s.policy.v1.PodDisruptionBudget,
    ("networking.k8s.io/v1", "NetworkPolicy"): k8s.networking.v1.NetworkPolicy,
    ("rbac.authorization.k8s.io/v1", "Role"): k8s.rbac.v1.Role,
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): k8s.rbac.v1.RoleBinding,
    ("coordination.k8s.io/v1", "Lease"): k8s.coordination.v1.Lease,
}

# Top-level manifest fields → the Python SDK's keyword arguments.
_FIELDS = {
    "metadata": "metadata",
    "spec": "spec",
    "stringData": "string_data",
    "data": "data",
    "type": "type",
    "rules": "rules",
    "roleRef": "role_ref",
    "subjects": "subjects",
    "automountServiceAccountToken": "automount_service_account_token",
}


def resource_name(obj: Manifest) -> str:
    return f"{obj['metadata']['name']}-{obj['kind'].lower()}"


# Prometheus Operator's kinds: not in pulumi-kubernetes' typed SDK, declared as custom resources.
_CUSTOM_KINDS = {("monitoring.coreos.com/v1", "PodMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule")}


def declare(obj: Manifest, opts: pulumi.ResourceOptions) -> pulumi.CustomResource:
    if (obj["apiVersion"], obj["kind"]) in _CUSTOM_KINDS:
        return k8s.apiextensions.CustomResource(
            resource_name(obj),
            api_version=obj["apiVersion"],
            kind=obj["kind"],
            metadata=obj["metadata"],
            spec=obj["spec"],
            opts=opts,
        )
    cls = _CLASSES[(obj["apiVersion"], obj["kind"])]
    kwargs = {_FIELDS[k]: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
    return cls(resource_name(obj), **kwargs, opts=opts)


def secret_digest(secret_values: dict[str, pulumi.Output[str] | None]) -> pulumi.Output[str]:
    """A digest of the secret values, not itself secret, so rotating a key rolls the pods that
    read it (env from secretKeyRef is fixed when a container starts) while diffs stay readable."""
    present = {k: v for k, v in sorted(secret_values.items()) if v is not None}

    def digest(values: list[str]) -> str:
        text = "\0".join(f"{k}={v}" for k, v in zip(present, values, strict=False))
        return hashlib.sha256(f"vllm-deploy\0{text}".encode()).hexdigest()

    return pulumi.Output.unsecret(pulumi.Output.all(*present.values()).apply(digest))


def rollout_timeouts(config: StackConfig) -> pulumi.CustomTimeouts:
    """`pulumi up` waits for vLLM as long as a new GPU node, its driver, the image pull and the
    startup probe could take (`plan.await_budget_seconds`), rounded up to whole minutes."""
    minutes = -(-serving_plan(config).await_budget_seconds // 60)
    return pulumi.CustomTimeouts(create=f"{minutes}m", update=f"{minutes}m", delete="10m")


def statefulset_ignored_fields(config: StackConfig) -> list[str]:
    # With an idle timeout or a replica range the wrapper owns the count; `pulumi up` must not undo it.
    return ["spec.replicas"] if config.wrapper_scales_vllm else []


class VllmServer(pulumi.ComponentResource):
    """vLLM's StatefulSet on the GPU pool, its Services and the policy that guards it."""

    def __init__(self, name: str, config: StackConfig, objects: list[Manifest], opts: pulumi.ResourceOptions):
        super().__init__("vllm-deploy:kubernetes:VllmServer", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.resources: dict[str, pulumi.CustomResource] = {}
        for obj in objects:
            options = child
            if obj["kind"] == "StatefulSet":
                options = pulumi.ResourceOptions.merge(
                    child,
                    pulumi.ResourceOptions(
                        custom_timeouts=rollout_timeouts(config),
                        ignore_changes=statefulset_ignored_fields(config),
                    ),
                )
            self.resources[resource_name(obj)] = declare(obj, options)
        self.service_name = manifests.names(config).vllm
        self.register_outputs({"service_name": self.service_name})


class Wrapper(pulumi.ComponentResource):
    """The OpenAI-compatible wrapper: Deployment, Service, HPA, PDB, NetworkPolicy (and scaler RBAC)."""

    def __init__(self, name: str, config: StackConfig, objects: list[Manifest], opts: pulumi.ResourceOptions):
        super().__init__("vllm-deploy:kubernetes:Wrapper", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.resources: dict[str, pulumi.CustomResource] = {}
        for obj in objects:
            options = child
            if obj["kind"] == "Deployment":
                # The HPA owns the replica count after creation.
                options = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(ignore_changes=["spec.replicas"]))
            self.resources[resource_name(obj)] = declare(obj, options)
        self.service_name = manifests.names(config).wrapper
        self.register_outputs({"service_name": self.service_name})


class Monitoring(pulumi.ComponentResource):
    """What lets Prometheus and Grafana see the release (`observability`): scrape objects, rules, dashboard."""

    def __init__(self, name: str, objects: list[Manifest], opts: pulumi.ResourceOptions):
        super().__init__("vllm-deploy:kubernetes:Monitoring", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.resources = {resource_name(obj): declare(obj, child) for obj in objects}
        self.register_outputs({})


class KubernetesDeployment(pulumi.ComponentResource):
    """A whole stack on Kubernetes: namespace, secrets, vLLM and the wrapper."""

    def __init__(
        self,
        name: str,
        config: StackConfig,
        secret_values: dict[str, pulumi.Output[str] | None],
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("vllm-deploy:kubernetes:Deployment", name, None, opts)
        objects = manifests.build(config, secret_values, secret_digest(secret_values))
        # A stack that names a kube context deploys there, not to whatever context is current.
        self.provider = (
            k8s.Provider(f"{name}-k8s", context=config.kubernetes.context, opts=pulumi.ResourceOptions(parent=self))
            if config.kubernetes.context
            else None
        )
        providers: list[pulumi.ProviderResource] | None = [self.provider] if self.provider else None
        child = pulumi.ResourceOptions(parent=self, provider=self.provider)
        depends: list[pulumi.Resource] = []
        if objects.namespace:
            self.namespace = declare(objects.namespace, child)
            depends.append(self.namespace)
        in_namespace = pulumi.ResourceOptions(parent=self, provider=self.provider, depends_on=depends)
        self.secret = declare(
            objects.secret,
            pulumi.ResourceOptions.merge(
                in_namespace, pulumi.ResourceOptions(additional_secret_outputs=["data", "stringData"])
            ),
        )
        after_secret = pulumi.ResourceOptions(parent=self, providers=providers, depends_on=[*depends, self.secret])
        self.vllm = VllmServer(f"{name}-vllm", config, objects.vllm, after_secret)
        self.wrapper = Wrapper(f"{name}-wrapper", config, [*objects.scaler, *objects.wrapper], after_secret)
        if objects.monitoring:
            self.monitoring = Monitoring(f"{name}-monitoring", objects.monitoring, after_secret)

        n = manifests.names(config)
        self.outputs = {
            "namespace": n.namespace,
            "vllm_service": n.vllm,
            "wrapper_service": n.wrapper,
            "port_forward": manifests.port_forward_command(config),
            "local_url": f"http://localhost:{config.wrapper.port}",
            "openai_base_url": f"http://localhost:{config.wrapper.port}/v1",
            "in_cluster_url": f"http://{n.wrapper}.{n.namespace}.svc.cluster.local:{config.wrapper.port}",
            "vllm_in_cluster_url": n.vllm_url,
            "served_model": config.model.name,
            "scale_to_zero_after_seconds": config.idle_timeout,
        }
        self.register_outputs(self.outputs)
