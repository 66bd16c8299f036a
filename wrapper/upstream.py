"""The one place that talks to vLLM: a pooled aiohttp session, retries, timeouts, and the
choice of replica (``wrapper/routing``) for every attempt.

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

import aiohttp

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


async def read_and_close(resp: aiohttp.ClientResponse) -> bytes:
    """The body of a stream the server refused (non-200), best effort; the socket is released."""
    try:
        return await resp.read()
    except Exception:
        return b""
    finally:
        resp.close()


def _held(resp: aiohttp.ClientResponse, b: Backend) -> aiohttp.ClientResponse:
    """Keep ``b``'s in-flight slot until ``resp``'s connection is released or closed."""
    conn = resp.connection
    if conn is None:  # nothing left to read: already released
        b.release()
    else:
        conn.add_callback(b.release)
    return resp


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
        self._session: aiohttp.ClientSession | None = None
        self.router = build_router(settings)
        several = len(settings.base_urls) > 1 or settings.discovery != "static"
        connect = min(settings.timeout, FAILOVER_CONNECT_SECONDS) if several else None
        self._stream_timeout = aiohttp.ClientTimeout(
            total=None, connect=settings.timeout, sock_connect=connect, sock_read=settings.timeout
        )
        self._plain_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect
        )  # asyncio.timeout() covers the rest
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
        connector = aiohttp.TCPConnector(
            limit=0,  # no pool cap: vLLM does its own scheduling/queueing
            keepalive_timeout=4.0,  # below uvicorn's 5 s idle close, avoids stale sockets
            ttl_dns_cache=DNS_CACHE_SECONDS,  # pod DNS names follow a rescheduled pod (routing/README.md)
            enable_cleanup_closed=False,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            skip_auto_headers=("User-Agent", "Accept-Encoding"),
            timeout=aiohttp.ClientTimeout(total=None),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),  # no cookies from the model server: skip the jar work
        )
        self.router.start(self._probe_backend)
        if self.router.discovery is not None:
            self.router.discovery.start()

    async def close(self) -> None:
        await self.router.stop()
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:  # pragma: no cover - start() runs in the app lifespan
            raise RuntimeError("upstream session not started")
        return self._session

    # -- the seam ----------------------------------------------------------------------------
    async def ready(self) -> None:
        """Called before every upstream request, outside ``VLLM_TIMEOUT`` (a wake has its own
        ``VLLM_WAKE_TIMEOUT``): records activity and wakes a scaled-to-zero vLLM."""
        if self.gate is not None:
            await self.gate()

    # -- requests ----------------------------------------------------------------------------
    def _headers_for(self, request_id: str | None) -> dict[str, str]:
        if not request_id:
            return self._headers
        h = dict(self._headers)
        h["X-Request-Id"] = request_id
        return h

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
    ) -> aiohttp.ClientResponse:
        """Send with retries; return a response whose status is final (not yet read).

        Each attempt goes to the replica the router picks; a failed attempt (connect error,
        502/503/504) is retried at once on a replica not tried yet for this request, and only
        after every replica failed, with a backoff. A 500 goes to one other replica, if there is
        one, and no further. The replica's in-flight slot is held until the response's
        connection is released (body read, stream closed)."""
        attempts = self.settings.max_retries + 1
        headers = self._headers_for(request_id)
        timeout = self._stream_timeout if stream else self._plain_timeout
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
            try:
                resp = await self.session.request(method, b.url(path), data=body, headers=headers, timeout=timeout)
            except (
                aiohttp.ClientConnectorError,
                aiohttp.ServerDisconnectedError,
                aiohttp.ClientOSError,
                aiohttp.ConnectionTimeoutError,
            ) as exc:
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
            async with asyncio.timeout(timeout):
                resp = await self._send(method, path, body, request_id, deadline, key=key)
                try:
                    data = await resp.read()
                finally:
                    resp.release()
        except TimeoutError:
            raise APIError(504, f"the model server did not answer within {timeout:g} s") from None
        except aiohttp.ClientError as exc:
            raise APIError(502, f"the model server broke the connection: {type(exc).__name__}") from None
        h = resp.headers
        return Reply(resp.status, h.get("Content-Type", "application/json"), data, h.get("Retry-After"))

    async def open_stream(
        self, path: str, body: bytes, request_id: str | None = None, key: int | None = None
    ) -> aiohttp.ClientResponse:
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
                    resp = await self.session.get(backend.base + "/models", headers=self._headers)
                    async with resp:
                        if resp.status == 200:
                            data = await resp.json(content_type=None)
                            models = data.get("data") or []
                            if models and isinstance(models[0], dict):
                                self._served_model = models[0].get("id")
            except (aiohttp.ClientError, TimeoutError, ValueError, AttributeError):
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
                resp = await self.session.get(b.root + "/health", headers=self._headers)
                async with resp:
                    return resp.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False
