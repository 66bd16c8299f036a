"""Discovery of the ready vLLM pods from the EndpointSlices of their headless Service.

Why EndpointSlices and not the headless Service's DNS: DNS answers only "ready" addresses, after
a TTL and the resolver's caching, and says nothing about a pod that is terminating; an
EndpointSlice carries each endpoint's ``ready``, ``serving`` and ``terminating`` conditions and
its pod (``targetRef``), and a watch delivers a change within a second. The pod name becomes
the backend's identity (stable across a StatefulSet pod's restarts: prefix routing sends the
same prompts back to ``vllm-0`` after it restarts) and its label in ``/metrics``.

The loop is the informer pattern of client-go, over plain aiohttp (the client in
wrapper/scaling/kube.py; ``kubernetes-asyncio`` would cost ~40 MB of RSS for two calls):

    GET /apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices?labelSelector=kubernetes.io/service-name={svc}
    GET ...same...&watch=1&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=300

then apply each watch event (ADDED, MODIFIED, DELETED, BOOKMARK) and re-list when the watch
ends, fails, or answers ``410 Gone`` (its resourceVersion is too old). The Role needs ``list``
and ``watch`` on ``endpointslices`` in ``discovery.k8s.io`` in the namespace, nothing more.

Which endpoints take requests (https://kubernetes.io/docs/reference/kubernetes-api/service-resources/endpoint-slice-v1/):
``conditions.ready`` true -- "a nil value should be interpreted as ready" -- and not
``conditions.terminating``; a terminating pod has ``ready`` false anyway (it may still be
``serving`` its last requests, which the wrapper lets finish but sends nothing new).
While no endpoint is ready (scaled to zero, RBAC missing) the pool falls back to
``VLLM_BASE_URL`` -- the Service -- so the wrapper behaves as it does with one backend.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from ..scaling.kube import SA_DIR, APIClient, KubeError, status_error
from .backends import Pool

log = logging.getLogger("wrapper.routing.discovery")

SERVICE_LABEL = "kubernetes.io/service-name"
WATCH_SECONDS = 300
ERROR_LOG_EVERY = 60.0


class EndpointSliceClient(APIClient):
    def __init__(
        self, namespace: str | None, service: str, *, api_url: str | None = None, sa_dir: Path = SA_DIR
    ) -> None:
        super().__init__(
            namespace,
            api_url=api_url,
            sa_dir=sa_dir,
            missing_namespace="VLLM_K8S_NAMESPACE is unset and no service-account namespace file",
        )
        self.service = service
        self.url = f"{self.api}/apis/discovery.k8s.io/v1/namespaces/{self.namespace}/endpointslices"
        self.selector = f"{SERVICE_LABEL}={service}"

    async def list(self) -> tuple[dict[str, dict[str, Any]], str]:
        """The Service's slices by name, and the list's resourceVersion (where a watch starts)."""
        obj = await self._call("GET", self.url, params={"labelSelector": self.selector})
        slices = {s["metadata"]["name"]: s for s in obj.get("items") or () if isinstance(s, dict)}
        return slices, str((obj.get("metadata") or {}).get("resourceVersion") or "")

    async def watch(
        self, resource_version: str, seconds: int = WATCH_SECONDS
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Watch events (``type``, ``object``) from ``resource_version`` until the server ends the watch."""
        params = {
            "labelSelector": self.selector,
            "watch": "1",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(seconds),
        }
        timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_read=seconds + 30)
        try:
            async with self._session_().get(self.url, params=params, headers=self._headers(), timeout=timeout) as resp:
                if resp.status != 200:
                    raw = await resp.read()
                    try:
                        obj = orjson.loads(raw) if raw else {}
                    except orjson.JSONDecodeError:
                        obj = {}
                    raise status_error(resp.status, obj if isinstance(obj, dict) else {}, raw)
                async for line in resp.content:  # one JSON watch event per line
                    if not line.strip():
                        continue
                    event = orjson.loads(line)
                    kind, obj = event.get("type"), event.get("object") or {}
                    if kind == "ERROR":  # e.g. 410 Gone: the resourceVersion was compacted away
                        raise status_error(int(obj.get("code") or 500), obj)
                    yield str(kind), obj
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
            raise KubeError(0, "WatchBroken", f"{type(exc).__name__}: {exc}"[:300]) from None


def ready_backends(
    slices: Iterable[dict[str, Any]], *, scheme: str, path: str, port: str | None
) -> list[tuple[str, str, str | None]]:
    """``(name, base URL, pod)`` of every ready, non-terminating endpoint, sorted by name."""
    found: dict[str, tuple[str, str, str | None]] = {}
    for s in slices:
        number = _port(s.get("ports") or (), port)
        if number is None:
            continue
        for ep in s.get("endpoints") or ():
            cond = ep.get("conditions") or {}
            if cond.get("ready") is False or cond.get("terminating") is True:
                continue
            addresses = ep.get("addresses") or ()
            if not addresses:
                continue
            host = addresses[0]
            ref = ep.get("targetRef") or {}
            pod = ref.get("name") if ref.get("kind") == "Pod" else None
            netloc = f"[{host}]:{number}" if ":" in host else f"{host}:{number}"
            name = pod or netloc
            found.setdefault(name, (name, f"{scheme}://{netloc}{path}", pod))
    return [found[k] for k in sorted(found)]


def _port(ports: Iterable[dict[str, Any]], wanted: str | None) -> int | None:
    for p in ports:
        if wanted is None or p.get("name") == wanted or str(p.get("port")) == wanted:
            n = p.get("port")
            return int(n) if isinstance(n, int) else None
    if wanted is not None and wanted.isdigit():
        return int(wanted)  # a port the slice does not name (the Service targets another)
    return None


class EndpointSliceDiscovery:
    """Keeps ``pool`` equal to the Service's ready endpoints."""

    def __init__(
        self, client: EndpointSliceClient, pool: Pool, *, base_url: str, port: str | None, backoff: float = 1.0
    ) -> None:
        u = urlsplit(base_url)
        self.client = client
        self.pool = pool
        self.scheme = u.scheme
        self.path = u.path.rstrip("/")
        self.port = port
        self.backoff = backoff
        self.slices: dict[str, dict[str, Any]] = {}
        self.synced = asyncio.Event()  # set after the first successful list
        self._task: asyncio.Task[None] | None = None
        self._last_log = -1e18

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None
        await self.client.close()

    def _apply(self) -> None:
        before = {b.name for b in self.pool.members} if self.pool.discovered else set()
        self.pool.replace(ready_backends(self.slices.values(), scheme=self.scheme, path=self.path, port=self.port))
        after = {b.name for b in self.pool.members} if self.pool.discovered else set()
        if before != after:
            log.info(
                "vLLM replicas",
                extra={"ready": sorted(after), "added": sorted(after - before), "removed": sorted(before - after)},
            )

    async def _run(self) -> None:
        while True:
            try:
                self.slices, rv = await self.client.list()
                self._apply()
                self.synced.set()
                async for kind, obj in self.client.watch(rv):
                    name = (obj.get("metadata") or {}).get("name")
                    if kind in ("ADDED", "MODIFIED") and name:
                        self.slices[name] = obj
                    elif kind == "DELETED" and name:
                        self.slices.pop(name, None)
                    else:  # BOOKMARK: only a newer resourceVersion
                        continue
                    self._apply()
                continue  # the server ended the watch (timeoutSeconds): list and watch again
            except asyncio.CancelledError:
                raise
            except KubeError as exc:
                if exc.status == 410:  # Gone: too old to resume; list again at once
                    continue
                self._warn(f"EndpointSlice discovery failed: {exc}")
            except Exception:  # a bug must not stop discovery; the last known set stays
                log.exception("EndpointSlice discovery error")
            await asyncio.sleep(self.backoff)

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_log >= ERROR_LOG_EVERY:
            self._last_log = now
            log.warning(message, extra={"service": self.client.service})


__all__ = ["EndpointSliceClient", "EndpointSliceDiscovery", "ready_backends"]
