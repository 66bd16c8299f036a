"""Scale-to-zero on Kubernetes: vLLM's StatefulSet goes to 0 replicas after ``VLLM_IDLE_TIMEOUT``
seconds without a request reaching the model (across all wrapper replicas), and the next
request wakes it. Imported only when ``VLLM_IDLE_TIMEOUT > 0`` or ``VLLM_AUTOSCALE_MAX > 0``.

Modules: ``policy`` (pure decisions, injected clock), ``kube`` (the one seam to the API server),
``gate`` (the background loop and the request gate); autoscaling between min and max replicas:
``autoscale_policy`` (pure decisions) and ``autoscale`` (its loop, the drain, the router hook).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from prometheus_client import CollectorRegistry

    from ..routing.router import Router
    from ..settings import Settings
    from .autoscale import Autoscaler
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


def build_autoscaler(settings: Settings, router: Router, registry: CollectorRegistry | None = None) -> Autoscaler:
    """The autoscaler the settings describe (call only when ``settings.autoscale_max > 0``)."""
    from ..settings import ConfigError
    from .autoscale import AutoscaleMetrics, Autoscaler
    from .autoscale_policy import AutoscalePolicy
    from .kube import KubeError, StatefulSetClient
    from .policy import ANNOTATION

    if not settings.autoscale_max > 0 or not settings.k8s_statefulset:
        raise ValueError("autoscaling needs VLLM_AUTOSCALE_MAX > 0 and VLLM_K8S_STATEFULSET")
    try:
        api = StatefulSetClient(
            settings.k8s_namespace,
            settings.k8s_statefulset,
            ANNOTATION,
            lease=settings.k8s_lease,
            api_url=str(settings.k8s_api_url).rstrip("/") if settings.k8s_api_url else None,
        )
    except KubeError as exc:
        raise ConfigError(f"VLLM_AUTOSCALE_MAX > 0 needs the Kubernetes API: {exc.message}") from None
    window = settings.autoscale_window
    tick = max(0.2, min(2.0, window / 5 if window > 0 else 1.0))
    policy = AutoscalePolicy(
        settings.autoscale_min,
        settings.autoscale_max,
        settings.autoscale_target_in_flight,
        window=window,
        scale_down_delay=settings.autoscale_scale_down_delay,
        # Two ticks: every wrapper replica has read the drain mark (and stopped routing there).
        drain_grace=2 * tick + 0.5,
        drain_timeout=settings.autoscale_drain_timeout,
    )
    bases = settings.base_urls[: settings.autoscale_max]
    return Autoscaler(api, policy, router, bases, tick=tick, metrics=AutoscaleMetrics(registry))


__all__ = ["build_autoscaler", "build_scaler"]
