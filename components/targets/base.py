"""The interface every target implements, and the small facts targets answer with."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import pulumi

    from components.config import StackConfig
    from components.manifests import Manifest


@dataclass(frozen=True)
class WrapperService:
    """The wrapper's Kubernetes Service, for `kubectl port-forward`."""

    namespace: str
    name: str
    port: int
    context: str | None


@dataclass(frozen=True)
class KeptWarm:
    """GPU replicas a setting keeps running while the stack is idle (billed all day)."""

    setting: str  # the stack key and its value, as a note names it: "modal.minContainers 1"
    replicas: int


@dataclass(frozen=True)
class CostBounds:
    """What caps a stack's GPU bill: the most GPU containers, the longest one request may run."""

    max_containers: int
    request_timeout_seconds: int


class Target(Protocol):
    name: str
    # Seconds a GPU stays billed after its last replica stops (a node outlives its pod).
    node_release_seconds: float
    # True where the price table's list prices only stand in for what the user's own cloud charges.
    prices_stand_in: bool

    def deploy(
        self, name: str, config: StackConfig, secret_values: Mapping[str, pulumi.Output[str] | None]
    ) -> Mapping[str, Any]:
        """Declare the stack's resources under the running Pulumi program; the stack outputs."""
        ...

    def objects(self, config: StackConfig) -> list[Manifest] | None:
        """The Kubernetes objects `pulumi up` declares (secrets redacted); None: it declares none."""
        ...

    def wrapper_service(self, config: StackConfig) -> WrapperService | None:
        """The Service to port-forward to the wrapper; None: reach the wrapper by its URL."""
        ...

    def kept_warm(self, config: StackConfig) -> KeptWarm | None: ...

    def cost_bounds(self, config: StackConfig) -> CostBounds | None:
        """The caps the worst case is priced at; None: a fixed fleet, whose worst case is always-on."""
        ...
