"""The one seam to the Kubernetes API: read the vLLM StatefulSet, write one annotation on it,
patch its scale subresource. Nothing else in the wrapper talks to Kubernetes.

Plain aiohttp (already the wrapper's HTTP client) with the pod's service-account token and CA,
not ``kubernetes-asyncio``: importing that client loads every API model and took the wrapper
from 60 MB to 97 MB RSS and ~1.2 s longer to start (measured), against a 100 MB budget, for
three HTTP calls. The calls are exactly what the official clients send:

    GET   /apis/apps/v1/namespaces/{ns}/statefulsets/{name}
    PATCH /apis/apps/v1/namespaces/{ns}/statefulsets/{name}?fieldManager=vllm-wrapper
          application/merge-patch+json  {"metadata": {"resourceVersion": RV, "annotations": {KEY: VALUE}}}
    PATCH /apis/apps/v1/namespaces/{ns}/statefulsets/{name}/scale?fieldManager=vllm-wrapper
          application/merge-patch+json  {"metadata": {"resourceVersion": RV}, "spec": {"replicas": N}}

``resourceVersion`` in a merge patch is a precondition: the API server answers 409 Conflict
when the object changed since it was read. That makes "scale to 1 only if still 0" and "scale
to 0 only if nobody wrote fresher activity" compare-and-swap operations; callers re-read and
decide again on :class:`Conflict`. The Role allows get/patch of this StatefulSet and its scale
subresource and nothing else.
"""

from __future__ import annotations

import os
import ssl
import time
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import orjson

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

    async def annotate(self, key: str, value: str, resource_version: str | None) -> Observation: ...

    async def scale(self, replicas: int, resource_version: str | None) -> int: ...

    async def close(self) -> None: ...


def observation(obj: dict[str, Any], annotation: str) -> Observation:
    """A StatefulSet object (as the API server returns it) → :class:`Observation`."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    annotations = meta.get("annotations") or {}
    replicas = spec.get("replicas")
    return Observation(
        replicas=1 if replicas is None else int(replicas),  # the API default is 1
        ready_replicas=int(status.get("readyReplicas") or 0),
        activity=annotations.get(annotation),
        resource_version=str(meta.get("resourceVersion") or ""),
    )


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
        api_url: str | None = None,
        sa_dir: Path = SA_DIR,
        timeout: float = 5.0,
    ) -> None:
        super().__init__(namespace, api_url=api_url, sa_dir=sa_dir, timeout=timeout)
        self.name = name
        self.annotation = annotation
        self.url = f"{self.api}/apis/apps/v1/namespaces/{self.namespace}/statefulsets/{name}"

    # -- the seam ----------------------------------------------------------------------------
    async def read(self) -> Observation:
        return observation(await self._call("GET", self.url), self.annotation)

    async def annotate(self, key: str, value: str, resource_version: str | None) -> Observation:
        meta: dict[str, Any] = {"annotations": {key: value}}
        if resource_version:
            meta["resourceVersion"] = resource_version
        return observation(await self._call("PATCH", self.url, {"metadata": meta}), self.annotation)

    async def scale(self, replicas: int, resource_version: str | None) -> int:
        body: dict[str, Any] = {"spec": {"replicas": int(replicas)}}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        obj = await self._call("PATCH", self.url + "/scale", body)
        return int((obj.get("spec") or {}).get("replicas", replicas))


__all__ = ["APIClient", "Conflict", "FIELD_MANAGER", "KubeError", "MERGE_PATCH", "StatefulSetAPI", "StatefulSetClient", "observation", "status_error"]
