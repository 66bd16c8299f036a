"""The Modal target: the app of components/modal_app, deployed by components/modal_target.py."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from components.config import StackConfig
from components.targets.base import CostBounds, KeptWarm, WrapperService

if TYPE_CHECKING:
    import pulumi

    from components.manifests import Manifest


class Modal:
    name: str = "modal"
    node_release_seconds: float = 0  # Modal bills the container, not a node
    prices_stand_in: bool = False

    def deploy(
        self, name: str, config: StackConfig, secret_values: Mapping[str, pulumi.Output[str] | None]
    ) -> Mapping[str, Any]:
        from components.modal_target import ModalDeployment

        return ModalDeployment(name, config, secret_values).outputs

    def objects(self, config: StackConfig) -> list[Manifest] | None:
        return None

    def wrapper_service(self, config: StackConfig) -> WrapperService | None:
        return None  # Modal serves the wrapper at a URL of its own

    def kept_warm(self, config: StackConfig) -> KeptWarm | None:
        m = config.modal
        if not m.min_containers:
            return None
        return KeptWarm(f"modal.minContainers {m.min_containers}", min(m.min_containers, config.vllm.replicas))

    def cost_bounds(self, config: StackConfig) -> CostBounds | None:
        return CostBounds(config.modal.max_containers, config.modal.function_timeout)


TARGET = Modal()
