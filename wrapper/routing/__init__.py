"""Several vLLM replicas behind one wrapper: which replica takes a request.

Modules: ``backends`` (the replicas, ejection), ``policy`` (prefix / least-load / round-robin,
pure), ``prefix`` (the routing key of a prompt), ``router`` (pick, outcomes, the prober),
``discovery`` (EndpointSlices on Kubernetes), ``metrics`` (the /metrics collector).

Backends come from ``VLLM_BASE_URL`` (comma-separated URLs; one URL behaves exactly as before),
or, with ``VLLM_DISCOVERY=endpointslices``, from the ready pods of ``VLLM_DISCOVERY_SERVICE``.
``VLLM_ROUTING`` picks the policy: ``prefix`` by default when there can be several replicas.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .backends import Backend, Pool, name_of
from .policy import make_policy
from .router import Router

if TYPE_CHECKING:  # pragma: no cover
    from ..settings import Settings

# How long the HTTP client keeps a resolved name. Replicas on Kubernetes are pod DNS names under
# the headless Service; a rescheduled pod comes back under the same name with a new IP, and
# CoreDNS serves the new record within its own TTL (5 s by default, 30 s in kubeadm's Corefile).
# A cached address kept for minutes (aiohttp's default is 300 s) would keep the wrapper dialling
# the old IP. ``wrapper/http1`` resolves at most every 5 s and forgets an address that failed to
# connect; pooled keep-alive connections do not resolve at all.
DNS_CACHE_SECONDS = 5


def build_router(settings: Settings) -> Router:
    """The router the settings describe (discovery is created here, started by ``Upstream.start``)."""
    static = [Backend(name_of(base), base) for base in settings.base_urls]
    pool = Pool(static, eject_after=settings.eject_after, eject_seconds=settings.eject_seconds)
    several = len(static) > 1 or settings.discovery != "static"
    policy = make_policy(settings.routing or ("prefix" if several else "round-robin"), settings.routing_balance)
    router = Router(pool, policy)
    if settings.discovery == "endpointslices":
        from ..scaling.kube import KubeError
        from ..settings import ConfigError
        from .discovery import EndpointSliceClient, EndpointSliceDiscovery

        assert settings.discovery_service is not None  # the settings validator requires it
        try:
            client = EndpointSliceClient(
                settings.k8s_namespace,
                settings.discovery_service,
                api_url=str(settings.k8s_api_url).rstrip("/") if settings.k8s_api_url else None,
            )
        except KubeError as exc:
            raise ConfigError(f"VLLM_DISCOVERY=endpointslices needs the Kubernetes API: {exc.message}") from None
        router.discovery = EndpointSliceDiscovery(
            client, pool, base_url=settings.base_urls[0], port=settings.discovery_port
        )
    return router


__all__ = ["DNS_CACHE_SECONDS", "Backend", "Pool", "Router", "build_router"]
