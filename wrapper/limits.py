"""Request caps (``n``, ``max_tokens``, prompt size) and per-caller rate limits.

Caps run on the already-parsed request object of every generation route, so they cost a few
dict lookups on the hot path. Rate limits are token buckets held in this process: with several
wrapper replicas (or ``VLLM_WORKERS`` > 1) each one enforces the limit on its own share of
traffic, so a caller spread over ``R`` replicas may get up to ``R`` times the figure.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from contextvars import ContextVar, Token
from dataclasses import dataclass

from .errors import APIError
from .settings import Settings


@dataclass(frozen=True, slots=True)
class Caps:
    """What one request may ask for; ``None`` = no cap."""

    max_n: int | None = None
    max_tokens: int | None = None
    max_prompt_chars: int | None = None

    @classmethod
    def from_settings(cls, s: Settings) -> Caps:
        return cls(s.max_n, s.max_completion_tokens, s.max_prompt_chars)

    def check(self, obj: dict, prompt_field: str) -> None:
        """Raise a 400 naming the parameter and the limit when ``obj`` asks for more."""
        if self.max_n is not None:
            _at_most(obj, "n", self.max_n)
        if self.max_tokens is not None:
            _at_most(obj, "max_tokens", self.max_tokens)
            _at_most(obj, "max_completion_tokens", self.max_tokens)
        if self.max_prompt_chars is not None:
            size = prompt_chars(obj.get(prompt_field))
            if size > self.max_prompt_chars:
                raise APIError(
                    400,
                    f"'{prompt_field}' holds {size} characters; this server accepts at most {self.max_prompt_chars}",
                    param=prompt_field,
                    code="limit_exceeded",
                )


def _at_most(obj: dict, name: str, limit: int) -> None:
    v = obj.get(name)
    # Non-integers are left to vLLM's own validation (it answers them with its usual 400).
    if type(v) is int and v > limit:
        raise APIError(400, f"'{name}' is {v}; this server allows at most {limit}", param=name, code="limit_exceeded")


def prompt_chars(prompt: object) -> int:
    """The prompt's size in characters (Unicode code points).

    Chat messages count their text (string ``content`` or the ``text`` of content parts);
    a completion prompt counts its string(s), and a token-id prompt one per id.
    """
    if isinstance(prompt, str):
        return len(prompt)
    if not isinstance(prompt, list):
        return 0
    total = 0
    for item in prompt:
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, int):
            total += 1
        elif isinstance(item, list):  # a batch of token-id prompts
            total += len(item)
        elif isinstance(item, dict):  # a chat message
            content = item.get("content")
            if isinstance(content, str):
                total += len(content)
            elif isinstance(content, list):
                for part in content:
                    text = part.get("text") if isinstance(part, dict) else None
                    if isinstance(text, str):
                        total += len(text)
    return total


# -- rate limits ----------------------------------------------------------------------------------


class TokenBucket:
    """``capacity`` units, refilled at ``rate`` per second; may go into debt after a charge."""

    __slots__ = ("capacity", "level", "rate", "stamp")

    def __init__(self, capacity: float, now: float) -> None:
        self.capacity = capacity
        self.rate = capacity / 60.0
        self.level = capacity
        self.stamp = now

    def refill(self, now: float) -> float:
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now
        return self.level

    def wait_for(self, need: float, now: float) -> float:
        """Seconds until ``need`` units are available (0 = now)."""
        short = need - self.refill(now)
        return 0.0 if short <= 0 else short / self.rate


class Usage:
    """Tokens one request used, filled in wherever vLLM's ``usage`` is seen (see ``note_usage``)."""

    __slots__ = ("estimate", "reported")

    def __init__(self, estimate: int) -> None:
        self.estimate = estimate
        self.reported: int | None = None

    @property
    def tokens(self) -> int:
        return self.reported if self.reported is not None else self.estimate


_usage: ContextVar[Usage | None] = ContextVar("wrapper_usage", default=None)


def note_usage(usage: object) -> None:
    """Record vLLM's ``usage`` for the request in progress (no-op unless token limits are on)."""
    ledger = _usage.get()
    if ledger is not None and isinstance(usage, dict):
        total = usage.get("total_tokens")
        if not isinstance(total, int):
            total = sum(v for k in ("prompt_tokens", "completion_tokens") if isinstance(v := usage.get(k), int))
        ledger.reported = (ledger.reported or 0) + total


def note_events(count: int) -> None:
    """Streamed events relayed for the current request (the estimate when no usage comes)."""
    ledger = _usage.get()
    if ledger is not None:
        ledger.estimate += count


class RateLimiter:
    """Per-caller request and token buckets (per minute, in this process).

    A caller is the key it presents (a hash of it), or its address when it sends none. A request
    is admitted when the caller has a request left and is not in token debt; the tokens it used
    are charged when it ends: vLLM's ``usage`` where the answer carries it (non-streamed answers,
    ``/chat``, streams with ``stream_options.include_usage``), else an estimate (a quarter of
    the request body's bytes plus one per streamed event). Refusals are 429 with ``Retry-After``.
    """

    def __init__(
        self, requests_per_minute: int | None, tokens_per_minute: int | None, max_callers: int = 10_000
    ) -> None:
        self.rpm = requests_per_minute
        self.tpm = tokens_per_minute
        self.max_callers = max_callers
        self._callers: OrderedDict[bytes, tuple[TokenBucket | None, TokenBucket | None]] = OrderedDict()

    @classmethod
    def from_settings(cls, s: Settings) -> RateLimiter | None:
        if s.rate_limit_requests is None and s.rate_limit_tokens is None:
            return None
        return cls(s.rate_limit_requests, s.rate_limit_tokens)

    @staticmethod
    def caller(authorization: bytes | None, client: tuple[str, int] | None) -> bytes:
        if authorization:
            return b"k" + hashlib.blake2b(authorization, digest_size=16).digest()
        return b"a" + (client[0] if client else "?").encode()

    def _buckets(self, who: bytes, now: float) -> tuple[TokenBucket | None, TokenBucket | None]:
        b = self._callers.get(who)
        if b is None:
            b = (
                TokenBucket(self.rpm, now) if self.rpm else None,
                TokenBucket(self.tpm, now) if self.tpm else None,
            )
            self._callers[who] = b
            if len(self._callers) > self.max_callers:  # bounded memory: forget the least recent
                self._callers.popitem(last=False)
        else:
            self._callers.move_to_end(who)
        return b

    def admit(self, who: bytes) -> None:
        """Take one request from ``who``'s allowance, or raise a 429."""
        now = time.monotonic()
        requests, tokens = self._buckets(who, now)
        wait = 0.0
        what = ""
        if tokens is not None and (w := tokens.wait_for(0.0, now)) > 0:  # in debt
            wait, what = w, f"{self.tpm} tokens"
        if requests is not None and (w := requests.wait_for(1.0, now)) > wait:
            wait, what = w, f"{self.rpm} requests"
        if wait > 0:
            raise APIError(
                429,
                f"rate limit reached: at most {what} per minute per caller on this wrapper replica",
                code="rate_limit_exceeded",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
        if requests is not None:
            requests.level -= 1.0

    def start_usage(self, body: bytes) -> Charge | None:
        """Begin recording the current request's usage; ``charge`` it when the request ends."""
        if self.tpm is None:
            return None
        ledger = Usage(len(body) // 4)
        return Charge(ledger, _usage.set(ledger))

    def charge(self, who: bytes, started: Charge | None) -> None:
        if started is None:
            return
        _usage.reset(started.reset)
        now = time.monotonic()
        _, tokens = self._buckets(who, now)
        if tokens is not None:
            tokens.refill(now)
            tokens.level -= started.ledger.tokens


@dataclass(slots=True)
class Charge:
    ledger: Usage
    reset: Token[Usage | None]
