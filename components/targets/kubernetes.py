"""The Kubernetes target: the objects of components/manifests.py, declared by components/kubernetes.py."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from components import manifests
from components.config import StackConfig
from components.targets.base import CostBounds, KeptWarm, WrapperService

if TYPE_CHECKING:
    import pulumi


class Kubernetes:
    name: str = "kubernetes"
    # cluster-autoscaler's default --scale-down-unneeded-time: a GPU node stays (and is billed)
    # this long after its last pod is gone.
    node_release_seconds: float = 600
    prices_stand_in: bool = True

    def deploy(
        self, name: str, config: StackConfig, secret_values: Mapping[str, pulumi.Output[str] | None]
    ) -> Mapping[str, Any]:
        from components.kubernetes import KubernetesDeployment

        return KubernetesDeployment(name, config, dict(secret_values)).outputs

    def objects(self, config: StackConfig) -> list[manifests.Manifest]:
        return manifests.build(config).all()

    def wrapper_service(self, config: StackConfig) -> WrapperService:
        n = manifests.names(config)
        return WrapperService(n.namespace, n.wrapper, config.wrapper.port, config.kubernetes.context)

    def kept_warm(self, config: StackConfig) -> KeptWarm | None:
        a = config.vllm.autoscale
        if a is not None and a.min_replicas > 0:  # autoscaling never goes below min
            return KeptWarm(f"vllm.replicas.min {a.min_replicas}", a.min_replicas)
        return None  # the idle timeout scales vLLM to zero replicas, every one of them

    def cost_bounds(self, config: StackConfig) -> CostBounds | None:
        return None  # vllm.replicas (a range's max) all day: the always-on column is the worst case


TARGET = Kubernetes()
