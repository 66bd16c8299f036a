"""The one seam to the Kubernetes API: read the vLLM StatefulSet, patch its scale subresource,
and read/write the shared activity record, a ``coordination.k8s.io`` Lease. Nothing else in the
wrapper talks to Kubernetes.

Why a Lease and not an annotation on the StatefulSet: writing the StatefulSet needs ``patch`` on
``statefulsets``, and that verb can rewrite the pod template (any image, as root, on a GPU node,
with the HF token in its environment). With the record in its own object the Role grants only
``get`` on the StatefulSet, ``get``/``patch`` on ``statefulsets/scale`` and ``get``/``patch`` on
that one Lease, all by ``resourceNames`` (the Pulumi program and the chart create the Lease, so no
``create``, which cannot be limited by name).

Plain aiohttp (already the wrapper's HTTP client) with the pod's service-account token and CA,
not ``kubernetes-asyncio``: importing that client loads every API model and took the wrapper
from 60 MB to 97 MB RSS and ~1.2 s longer to start (measured), against a 100 MB budget, for
four HTTP calls. The calls are exactly what the official clients send:

    GET   /apis/apps/v1/namespaces/{ns}/statefulsets/{name}
    GET   /apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{lease}
    PATCH /apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{lease}?fieldManager=vllm-wrapper
          application/merge-patch+json  {"metadata": {"resourceVersion": RV, "annotations": {KEY: VALUE}}}
    PATCH /apis/apps/v1/namespaces/{ns}/statefulsets/{name}/scale?fieldManager=vllm-wrapper
          application/merge-patch+json  {"metadata": {"resourceVersion": RV}, "spec": {"replicas": N}}

``resourceVersion`` in a merge patch is a precondition: the API server answers 409 Conflict
when the object changed since it was read. That makes "scale to 1 only if still 0" and "publish
activity only over what I read" compare-and-swap operations; callers re-read and decide again
on :class:`Conflict`. Two objects cannot be swapped together, so a scale-down re-reads the Lease
right after it and wakes vLLM again if fresher activity landed in between (see ``gate``).
"""

from __future__ import annotations

import os
import ssl
import time
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import orjson

from .autoscale_policy import DRAIN_ANNOTATION
from .policy import Observation

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
FIELD_MANAGER = "vllm-wrapper"
MERGE_PATCH = "application/merge-patch+json"
TOKEN_REFRESH_SECONDS = 60.0  # projected tokens rotate; re-read the file like client-go does


class KubeError(Exception):
    """A failed API call. ``status`` 0 means the API server could not be reached."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}" if status else f"{reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class Conflict(KubeError):
    """409: the object changed since it was read (stale resourceVersion)."""


class StatefulSetAPI(Protocol):
    """The seam (the tests put an in-memory fake or a real loopback HTTP server behind it)."""

    async def read(self) -> Observation: ...

    async def annotate(self, key: str, value: str | None, resource_version: str | None) -> Observation: ...

    async def scale(self, replicas: int, resource_version: str | None) -> int: ...

    async def close(self) -> None: ...


def observation(sts: dict[str, Any], lease: dict[str, Any], annotation: str) -> Observation:
    """A StatefulSet and the activity Lease (as the API server returns them) → :class:`Observation`."""
    meta = sts.get("metadata") or {}
    spec = sts.get("spec") or {}
    status = sts.get("status") or {}
    lease_meta = lease.get("metadata") or {}
    replicas = spec.get("replicas")
    return Observation(
        replicas=1 if replicas is None else int(replicas),  # the API default is 1
        ready_replicas=int(status.get("readyReplicas") or 0),
        activity=(lease_meta.get("annotations") or {}).get(annotation),
        resource_version=str(meta.get("resourceVersion") or ""),
        activity_version=str(lease_meta.get("resourceVersion") or ""),
        drain=(lease_meta.get("annotations") or {}).get(DRAIN_ANNOTATION),
    )


def lease_name(statefulset: str) -> str:
    """The activity Lease's default name (the Pulumi program and the chart create it)."""
    return f"{statefulset}-activity"


def in_cluster_url() -> str | None:
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if not host:
        return None
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"https://{host}:{port}"


class APIClient:
    """The plumbing every call to the API server shares: the in-cluster URL, the service-account
    token (re-read every minute) and CA, one small aiohttp session, ``Status`` errors."""

    def __init__(
        self,
        namespace: str | None,
        *,
        api_url: str | None = None,
        sa_dir: Path = SA_DIR,
        timeout: float = 5.0,
        missing_namespace: str = "VLLM_K8S_NAMESPACE is unset and no service-account namespace file",
    ) -> None:
        self.sa_dir = Path(sa_dir)
        if namespace is None:
            try:
                namespace = (self.sa_dir / "namespace").read_text().strip()
            except OSError:
                raise KubeError(0, "NoNamespace", missing_namespace) from None
        base = api_url or in_cluster_url()
        if not base:
            raise KubeError(0, "NoAPIServer", "not in a cluster: KUBERNETES_SERVICE_HOST is unset and no API URL given")
        self.namespace = namespace
        self.api = base.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._token: str | None = None
        self._token_read = -1e18
        self._ssl: ssl.SSLContext | bool | None = None
        if self.api.startswith("https://"):
            ca = self.sa_dir / "ca.crt"
            self._ssl = ssl.create_default_context(cafile=str(ca)) if ca.exists() else True
        self._session: aiohttp.ClientSession | None = None

    def _session_(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(limit=4, ssl=self._ssl if self._ssl is not None else True),
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        now = time.monotonic()
        if now - self._token_read >= TOKEN_REFRESH_SECONDS:
            try:
                self._token = (self.sa_dir / "token").read_text().strip() or None
            except OSError:
                self._token = None
            self._token_read = now
        h = {"Accept": "application/json", "User-Agent": "vllm-wrapper"}
        if self._token:
            h["Authorization"] = "Bearer " + self._token
        if content_type:
            h["Content-Type"] = content_type
        return h

    async def _call(
        self, method: str, url: str, body: dict | None = None, params: dict[str, str] | None = None
    ) -> dict[str, Any]:
        data = orjson.dumps(body) if body is not None else None
        if method == "PATCH":
            params = {**(params or {}), "fieldManager": FIELD_MANAGER}
        try:
            async with self._session_().request(
                method, url, data=data, params=params, headers=self._headers(MERGE_PATCH if data else None)
            ) as resp:
                raw = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise KubeError(0, "Unreachable", f"{type(exc).__name__}: {exc}"[:300]) from None
        try:
            obj = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            obj = {}
        if not isinstance(obj, dict):
            obj = {}
        if 200 <= status < 300:
            return obj
        raise status_error(status, obj, raw)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def status_error(status: int, obj: dict[str, Any], raw: bytes = b"") -> KubeError:
    """An error answer -- a ``Status`` object: {"kind": "Status", "reason", "message", "code"}."""
    reason = str(obj.get("reason") or "HTTP")
    message = str(obj.get("message") or raw[:200].decode("utf-8", "replace") or f"HTTP {status}")
    cls = Conflict if status == 409 else KubeError
    return cls(status, reason, message)


class StatefulSetClient(APIClient):
    """:class:`StatefulSetAPI` over HTTP to the API server."""

    def __init__(
        self,
        namespace: str | None,
        name: str,
        annotation: str,
        *,
        lease: str | None = None,
        api_url: str | None = None,
        sa_dir: Path = SA_DIR,
        timeout: float = 5.0,
    ) -> None:
        super().__init__(namespace, api_url=api_url, sa_dir=sa_dir, timeout=timeout)
        self.name = name
        self.annotation = annotation
        self.lease = lease or lease_name(name)
        self.url = f"{self.api}/apis/apps/v1/namespaces/{self.namespace}/statefulsets/{name}"
        self.lease_url = f"{self.api}/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases/{self.lease}"

    # -- the seam ----------------------------------------------------------------------------
    async def read(self) -> Observation:
        sts = await self._call("GET", self.url)
        return observation(sts, await self._call("GET", self.lease_url), self.annotation)

    async def annotate(self, key: str, value: str | None, resource_version: str | None) -> Observation:
        """Write ``key: value`` on the Lease (``None`` removes the key, as a merge patch does);
        ``resource_version`` is the Lease's (a precondition).
        Reads the StatefulSet after the write, so a caller learns of a scale-down made meanwhile."""
        meta: dict[str, Any] = {"annotations": {key: value}}  # JSON null deletes (RFC 7386)
        if resource_version:
            meta["resourceVersion"] = resource_version
        lease = await self._call("PATCH", self.lease_url, {"metadata": meta})
        return observation(await self._call("GET", self.url), lease, self.annotation)

    async def scale(self, replicas: int, resource_version: str | None) -> int:
        body: dict[str, Any] = {"spec": {"replicas": int(replicas)}}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        obj = await self._call("PATCH", self.url + "/scale", body)
        return int((obj.get("spec") or {}).get("replicas", replicas))


__all__ = [
    "FIELD_MANAGER",
    "MERGE_PATCH",
    "APIClient",
    "Conflict",
    "KubeError",
    "StatefulSetAPI",
    "StatefulSetClient",
    "lease_name",
    "observation",
    "status_error",
]
