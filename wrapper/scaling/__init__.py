"""Scale-to-zero on Kubernetes: vLLM's StatefulSet goes to 0 replicas after ``VLLM_IDLE_TIMEOUT``
seconds without a request reaching the model (across all wrapper replicas), and the next
request wakes it. Imported only when ``VLLM_IDLE_TIMEOUT > 0``.

Modules: ``policy`` (pure decisions, injected clock), ``kube`` (the one seam to the API server),
``gate`` (the background loop and the request gate).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from prometheus_client import CollectorRegistry

    from ..settings import Settings
    from .gate import Scaler


def build_scaler(
    settings: Settings,
    registry: CollectorRegistry | None = None,
    *,
    probe: Callable[[], Awaitable[bool]] | None = None,
    busy: Callable[[], bool] | None = None,
) -> Scaler:
    """The scaler the settings describe (call only when ``settings.idle_timeout > 0``)."""
    from .gate import Scaler, ScalerMetrics
    from .kube import StatefulSetClient
    from .policy import ANNOTATION, Policy

    if not settings.idle_timeout > 0 or not settings.k8s_statefulset:
        raise ValueError("scale-to-zero needs VLLM_IDLE_TIMEOUT > 0 and VLLM_K8S_STATEFULSET")
    from ..settings import ConfigError
    from .kube import KubeError

    try:
        api = StatefulSetClient(
            settings.k8s_namespace,
            settings.k8s_statefulset,
            ANNOTATION,
            lease=settings.k8s_lease,
            api_url=str(settings.k8s_api_url).rstrip("/") if settings.k8s_api_url else None,
        )
    except KubeError as exc:  # not in a cluster, no namespace: a configuration error, say so at start
        raise ConfigError(f"VLLM_IDLE_TIMEOUT > 0 needs the Kubernetes API: {exc.message}") from None
    policy = Policy(settings.idle_timeout)
    return Scaler(
        api,
        policy,
        wake_timeout=settings.wake_timeout,
        metrics=ScalerMetrics(registry),
        probe=probe,
        busy=busy,
        wake_replicas=settings.k8s_replicas,
    )


__all__ = ["build_scaler"]
