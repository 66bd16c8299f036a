"""The one place that talks to vLLM: pooled keep-alive connections (``wrapper/http1``), retries,
timeouts, and the choice of replica (``wrapper/routing``) for every attempt.

``Upstream.ready()`` is the seam for the scale-to-zero gate (``wrapper/scaling``, on when
``VLLM_IDLE_TIMEOUT > 0``): every call goes through it before the first byte is sent upstream.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson

from . import http1
from .errors import APIError
from .routing import DNS_CACHE_SECONDS, Backend, build_router
from .settings import Settings

log = logging.getLogger("wrapper.upstream")

RETRY_STATUSES = frozenset({502, 503, 504})
# vLLM answers 500 when its engine died (``EngineDeadError``: a crash, an OOM, a pod being
# stopped): the replica is going away and the request did nothing, so it is tried once more on
# another replica. Only once: a request that itself crashes engines must not take down them all.
ENGINE_FAILED_STATUS = 500
DEFAULT_RETRY_AFTER = "5"
# With several replicas a connect that hangs (a pod IP gone without a reset) must fail over
# long before VLLM_TIMEOUT; one backend keeps the old behaviour (VLLM_TIMEOUT bounds it all).
FAILOVER_CONNECT_SECONDS = 3.0


@dataclass(slots=True)
class Reply:
    """A fully read upstream reply."""

    status: int
    content_type: str
    body: bytes
    retry_after: str | None = None


async def read_and_close(resp: http1.Response) -> bytes:
    """The body of a stream the server refused (non-200), best effort; the socket is released."""
    try:
        return await resp.read()
    except Exception:
        return b""
    finally:
        resp.release()


def _held(resp: http1.Response, b: Backend) -> http1.Response:
    """Keep ``b``'s in-flight slot until ``resp``'s connection is released or closed."""
    resp.on_release(b.release)
    return resp


def _header_lines(headers: dict[str, str]) -> bytes:
    return b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in headers.items())


class Upstream:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.base = settings.base
        self.root = settings.root
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if settings.api_key is not None:
            self._headers["Authorization"] = "Bearer " + settings.api_key.get_secret_value()
        if settings.modal_key is not None and settings.modal_secret is not None:  # Modal's proxy auth
            self._headers["Modal-Key"] = settings.modal_key.get_secret_value()
            self._headers["Modal-Secret"] = settings.modal_secret.get_secret_value()
        self._header_lines = _header_lines(self._headers)
        self._client: http1.Client | None = None
        self.router = build_router(settings)
        several = len(settings.base_urls) > 1 or settings.discovery != "static"
        # A call must end within VLLM_TIMEOUT (http1's total_timeout); a stream must start within it
        # (asyncio.timeout in open_stream), then its reads time out after VLLM_TIMEOUT of silence.
        self._connect_timeout = min(settings.timeout, FAILOVER_CONNECT_SECONDS) if several else None
        # Prefix routing hashes the prompt (a few microseconds); skipped when there is one backend.
        self.keyed = several and self.router.policy.name == "prefix"
        self._served_model: str | None = None
        self._model_retry_at = 0.0
        self._health: tuple[float, bool] = (0.0, False)
        self._health_probe: asyncio.Task[bool] | None = None
        self._model_probe: asyncio.Future[str | None] | None = None
        # Scale-to-zero gate (wrapper/scaling): wakes vLLM and holds the request; None = off.
        self.gate: Callable[[], Awaitable[None]] | None = None

    # -- life cycle --------------------------------------------------------------------------
    async def start(self) -> None:
        # No pool cap (vLLM does its own scheduling and queueing); idle connections close after
        # 4 s, below uvicorn's 5 s, so the pool never sends on a socket the server is closing;
        # pod DNS names are re-resolved every 5 s to follow a rescheduled pod (routing/README.md).
        self._client = http1.Client(keepalive_timeout=4.0, dns_ttl=DNS_CACHE_SECONDS)
        self.router.start(self._probe_backend)
        if self.router.discovery is not None:
            self.router.discovery.start()

    async def close(self) -> None:
        await self.router.stop()
        if self._client is not None:
            await self._client.close()
            self._client = None

    @property
    def client(self) -> http1.Client:
        if self._client is None:  # pragma: no cover - start() runs in the app lifespan
            raise RuntimeError("upstream client not started")
        return self._client

    # -- the seam ----------------------------------------------------------------------------
    async def ready(self) -> None:
        """Called before every upstream request, outside ``VLLM_TIMEOUT`` (a wake has its own
        ``VLLM_WAKE_TIMEOUT``): records activity and wakes a scaled-to-zero vLLM."""
        if self.gate is not None:
            await self.gate()

    # -- requests ----------------------------------------------------------------------------
    def _headers_for(self, request_id: str | None) -> bytes:
        if not request_id:  # the gateway sends only ids of A-Za-z0-9._:- (wrapper/middleware.py)
            return self._header_lines
        return self._header_lines + b"X-Request-Id: " + request_id.encode() + b"\r\n"

    def _backoff(self, attempt: int, retry_after: str | None = None) -> float:
        base = self.settings.retry_backoff
        delay = min(base * (2**attempt), 5.0)
        delay = random.uniform(delay / 2, delay)  # "equal jitter": spread, never zero
        if retry_after:
            try:
                delay = max(delay, min(float(retry_after), 5.0))
            except ValueError:
                pass
        return delay

    async def _send(
        self,
        method: str,
        path: str,
        body: bytes | None,
        request_id: str | None,
        deadline: float | None,
        stream: bool = False,
        key: int | None = None,
    ) -> http1.Response:
        """Send with retries; return a response whose status is final (not yet read).

        Each attempt goes to the replica the router picks; a failed attempt (connect error,
        502/503/504) is retried at once on a replica not tried yet for this request, and only
        after every replica failed, with a backoff. A 500 goes to one other replica, if there is
        one, and no further. The replica's in-flight slot is held until the response's
        connection is released (body read, stream closed)."""
        attempts = self.settings.max_retries + 1
        headers = self._headers_for(request_id)
        client = self.client
        connect_timeout = self._connect_timeout
        read_timeout = self.settings.timeout if stream else None
        total_timeout: float | None = None
        router = self.router
        last_error = "upstream unavailable"
        retry_after: str | None = None
        tried: list[Backend] = []
        engine_failover_left = 1
        for attempt in range(attempts):
            b = router.pick(key, tried)
            if b is None:  # every replica failed this request once: go round again
                tried.clear()
                b = router.pick(key, tried)
                assert b is not None
            if not stream and deadline is not None:
                total_timeout = deadline - time.monotonic()
            try:
                resp = await client.request(
                    method,
                    b.url(path),
                    body,
                    headers,
                    connect_timeout=connect_timeout,
                    read_timeout=read_timeout,
                    total_timeout=total_timeout,
                )
            except (http1.ConnectError, http1.ServerDisconnected) as exc:
                b.release()
                last_error = f"cannot reach the model server: {type(exc).__name__}"
                retry_after = None
                router.failed(b, last_error)
            except BaseException:
                b.release()
                raise
            else:
                if (
                    resp.status == ENGINE_FAILED_STATUS
                    and engine_failover_left
                    and attempt < attempts - 1
                    and router.pool.candidates([*tried, b])
                ):
                    engine_failover_left = 0
                    router.failed(b, "HTTP 500")
                    resp.release()
                    b.release()
                    last_error = "model server answered HTTP 500"
                    tried.append(b)
                    continue
                if resp.status not in RETRY_STATUSES:
                    router.answered(b)
                    return _held(resp, b)
                retry_after = resp.headers.get("Retry-After")
                router.failed(b, f"HTTP {resp.status}")
                if attempt == attempts - 1:
                    return _held(resp, b)
                resp.release()
                b.release()
                last_error = f"model server answered HTTP {resp.status}"
            tried.append(b)
            if attempt < attempts - 1:
                if router.pool.candidates(tried):
                    continue  # fail over to another replica now
                tried.clear()
                delay = self._backoff(attempt, retry_after)
                if deadline is not None and time.monotonic() + delay >= deadline:
                    break
                log.info(
                    "upstream retry",
                    extra={"request_id": request_id, "attempt": attempt + 1, "reason": last_error},
                )
                await asyncio.sleep(delay)
        if last_error.startswith("cannot reach"):
            self.mark_unreachable()
        raise APIError(
            503,
            f"{last_error}; the model server is down or still loading, retry later",
            headers={"Retry-After": retry_after or DEFAULT_RETRY_AFTER},
        )

    async def call(
        self, method: str, path: str, body: bytes | None = None, request_id: str | None = None, key: int | None = None
    ) -> Reply:
        """A non-streamed call, read completely, within ``VLLM_TIMEOUT`` (504 past it)."""
        await self.ready()
        timeout = self.settings.timeout
        deadline = time.monotonic() + timeout
        try:
            resp = await self._send(method, path, body, request_id, deadline, key=key)
            try:
                data = await resp.read()
            finally:
                resp.release()
        except TimeoutError:
            raise APIError(504, f"the model server did not answer within {timeout:g} s") from None
        except http1.UpstreamError as exc:
            raise APIError(502, f"the model server broke the connection: {type(exc).__name__}") from None
        h = resp.headers
        return Reply(resp.status, h.get("Content-Type", "application/json"), data, h.get("Retry-After"))

    async def open_stream(
        self, path: str, body: bytes, request_id: str | None = None, key: int | None = None
    ) -> http1.Response:
        """Start a streamed call; the caller reads and must ``close()`` it.

        Retries happen only here, before any byte went to the client. Reads then time out
        when the server stays silent for ``VLLM_TIMEOUT`` seconds.
        """
        await self.ready()
        timeout = self.settings.timeout
        deadline = time.monotonic() + timeout
        try:
            async with asyncio.timeout(timeout):
                return await self._send("POST", path, body, request_id, deadline, stream=True, key=key)
        except TimeoutError:
            raise APIError(504, f"the model server did not answer within {timeout:g} s") from None

    # -- discovery and health ----------------------------------------------------------------
    async def served_model(self) -> str | None:
        """The model the server serves (first of ``/v1/models``), cached once found."""
        if self._served_model is None and time.monotonic() >= self._model_retry_at:
            self._model_retry_at = time.monotonic() + 5.0  # at most one discovery per 5 s
            try:
                async with asyncio.timeout(self.settings.health_timeout):
                    backend = self.router.pool.candidates()[0]
                    resp = await self.client.request("GET", backend.url("/models"), None, self._header_lines)
                    try:
                        body = await resp.read()
                    finally:
                        resp.release()
                    if resp.status == 200:
                        models = orjson.loads(body).get("data") or []
                        if models and isinstance(models[0], dict):
                            self._served_model = models[0].get("id")
            except (http1.UpstreamError, TimeoutError, ValueError, AttributeError):
                return None
        return self._served_model

    async def available(self) -> bool:
        """The last known answer of vLLM's ``/health``, at once.

        A result older than ``VLLM_HEALTH_CACHE_SECONDS`` starts a probe in the background
        (one at a time); a request that could not reach the server marks it unavailable. Only
        the very first call, with nothing known yet, waits for a probe (within
        ``VLLM_HEALTH_TIMEOUT``). Nothing is probed at start-up: on Modal a probe would start
        a GPU container.
        """
        stamp, ok = self._health
        if stamp == 0.0:
            return await self.probe()
        if time.monotonic() - stamp >= self.settings.health_cache_seconds:
            self._refresh_health()
        return ok

    async def probe(self) -> bool:
        """A fresh probe (shared with one already in flight), for callers that must wait for it."""
        return await asyncio.shield(self._refresh_health())

    def mark_unreachable(self) -> None:
        self._health = (time.monotonic(), False)

    def known_model(self) -> str | None:
        """The served model if already discovered; else start a discovery in the background."""
        if self._served_model is None and (self._model_probe is None or self._model_probe.done()):
            self._model_probe = asyncio.ensure_future(self.served_model())
        return self._served_model

    def _refresh_health(self) -> asyncio.Task[bool]:
        if self._health_probe is None or self._health_probe.done():
            self._health_probe = asyncio.ensure_future(self._probe())
        return self._health_probe

    async def _probe(self) -> bool:
        """Any replica answers ``/health`` (each one's answer is kept for ``/health``'s list)."""
        ok = any(await self.router.probe(self.router.pool.members))
        self._health = (time.monotonic(), ok)
        return ok

    async def _probe_backend(self, b: Backend) -> bool:
        try:
            async with asyncio.timeout(self.settings.health_timeout):
                resp = await self.client.request("GET", b.root + "/health", None, self._header_lines)
                try:
                    await resp.read()
                finally:
                    resp.release()
                return resp.status == 200
        except (http1.UpstreamError, TimeoutError):
            return False
