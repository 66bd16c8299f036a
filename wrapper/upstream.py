"""The one place that talks to vLLM: a pooled aiohttp session, retries, timeouts.

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
from yarl import URL

from .errors import APIError
from .settings import Settings

log = logging.getLogger("wrapper.upstream")

RETRY_STATUSES = frozenset({502, 503, 504})
DEFAULT_RETRY_AFTER = "5"


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
        self._stream_timeout = aiohttp.ClientTimeout(
            total=None, connect=settings.timeout, sock_read=settings.timeout
        )
        self._plain_timeout = aiohttp.ClientTimeout(total=None)  # asyncio.timeout() covers these
        self._urls: dict[str, URL] = {}
        self._served_model: str | None = None
        self._model_retry_at = 0.0
        self._health: tuple[float, bool] = (0.0, False)
        self._health_probe: asyncio.Task[bool] | None = None
        # Scale-to-zero gate (wrapper/scaling): wakes vLLM and holds the request; None = off.
        self.gate: Callable[[], Awaitable[None]] | None = None

    # -- life cycle --------------------------------------------------------------------------
    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=0,  # no pool cap: vLLM does its own scheduling/queueing
            keepalive_timeout=4.0,  # below uvicorn's 5 s idle close, avoids stale sockets
            ttl_dns_cache=300,
            enable_cleanup_closed=False,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            skip_auto_headers=("User-Agent", "Accept-Encoding"),
            timeout=aiohttp.ClientTimeout(total=None),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),  # no cookies from the model server: skip the jar work
        )

    async def close(self) -> None:
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

    def url(self, path: str) -> URL:
        u = self._urls.get(path)
        if u is None:
            u = self._urls[path] = URL(self.base + path)
        return u

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
        url: URL,
        body: bytes | None,
        request_id: str | None,
        deadline: float | None,
        stream: bool = False,
    ) -> aiohttp.ClientResponse:
        """Send with retries; return a response whose status is final (not yet read)."""
        attempts = self.settings.max_retries + 1
        headers = self._headers_for(request_id)
        timeout = self._stream_timeout if stream else self._plain_timeout
        last_error = "upstream unavailable"
        retry_after: str | None = None
        for attempt in range(attempts):
            try:
                resp = await self.session.request(
                    method, url, data=body, headers=headers, timeout=timeout
                )
            except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError) as exc:
                last_error = f"cannot reach the model server: {type(exc).__name__}"
                retry_after = None
            except aiohttp.ClientOSError as exc:
                last_error = f"cannot reach the model server: {type(exc).__name__}"
                retry_after = None
            else:
                if resp.status not in RETRY_STATUSES:
                    return resp
                retry_after = resp.headers.get("Retry-After")
                if attempt == attempts - 1:
                    return resp
                resp.release()
                last_error = f"model server answered HTTP {resp.status}"
            if attempt < attempts - 1:
                delay = self._backoff(attempt, retry_after)
                if deadline is not None and time.monotonic() + delay >= deadline:
                    break
                log.info(
                    "upstream retry",
                    extra={"request_id": request_id, "attempt": attempt + 1, "reason": last_error},
                )
                await asyncio.sleep(delay)
        raise APIError(
            503,
            f"{last_error}; the model server is down or still loading, retry later",
            headers={"Retry-After": retry_after or DEFAULT_RETRY_AFTER},
        )

    async def call(self, method: str, path: str, body: bytes | None = None, request_id: str | None = None) -> Reply:
        """A non-streamed call, read completely, within ``VLLM_TIMEOUT`` (504 past it)."""
        await self.ready()
        timeout = self.settings.timeout
        deadline = time.monotonic() + timeout
        try:
            async with asyncio.timeout(timeout):
                resp = await self._send(method, self.url(path), body, request_id, deadline)
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

    async def open_stream(self, path: str, body: bytes, request_id: str | None = None) -> aiohttp.ClientResponse:
        """Start a streamed call; the caller reads and must ``close()`` it.

        Retries happen only here, before any byte went to the client. Reads then time out
        when the server stays silent for ``VLLM_TIMEOUT`` seconds.
        """
        await self.ready()
        timeout = self.settings.timeout
        deadline = time.monotonic() + timeout
        try:
            async with asyncio.timeout(timeout):
                return await self._send("POST", self.url(path), body, request_id, deadline, stream=True)
        except TimeoutError:
            raise APIError(504, f"the model server did not answer within {timeout:g} s") from None

    # -- discovery and health ----------------------------------------------------------------
    async def served_model(self) -> str | None:
        """The model the server serves (first of ``/v1/models``), cached once found."""
        if self._served_model is None and time.monotonic() >= self._model_retry_at:
            self._model_retry_at = time.monotonic() + 5.0  # at most one discovery per 5 s
            try:
                async with asyncio.timeout(self.settings.health_timeout):
                    resp = await self.session.get(self.base + "/models", headers=self._headers)
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
        """Whether the server answers ``/health`` with 200; cached briefly, never hangs."""
        stamp, ok = self._health
        if time.monotonic() - stamp < self.settings.health_cache_seconds:
            return ok
        if self._health_probe is None or self._health_probe.done():
            self._health_probe = asyncio.ensure_future(self._probe())
        return await asyncio.shield(self._health_probe)

    async def _probe(self) -> bool:
        ok = False
        try:
            async with asyncio.timeout(self.settings.health_timeout):
                resp = await self.session.get(self.root + "/health", headers=self._headers)
                async with resp:
                    ok = resp.status == 200
        except (aiohttp.ClientError, TimeoutError):
            ok = False
        self._health = (time.monotonic(), ok)
        return ok
