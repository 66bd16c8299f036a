"""The routing key of a request: a 64-bit hash of the leading part of its prompt.

What is hashed, and why that part:

* chat (``messages``): the leading ``system``/``developer`` messages and the *first* other
  message (normally the first user turn), at most ``limit`` characters in all. A conversation's
  later turns repeat exactly these messages, so every turn of one conversation gets the same
  key (vLLM's prefix cache holds the earlier turns on that replica), and every conversation of
  a tenant whose system prompt is at least ``limit`` characters long lands on the same replica
  (the system prompt is what they share). Hashing "the first N characters of everything"
  instead would move a short conversation to another replica as soon as its second turn
  filled those N characters.
* completions (``prompt``): its first ``limit`` characters (the first prompt of a batch;
  token-id prompts: their first ``limit // 4`` ids, about as many tokens).

blake2b from the standard library, not Python's ``hash()`` (salted per process): every
wrapper process and replica computes the same key for the same prompt with no coordination.
Cost: a few microseconds for 2 KiB (``benchmarks/routing_bench.py --micro`` prints it).
"""

from __future__ import annotations

from hashlib import blake2b
from typing import Any

_LEADING = frozenset({"system", "developer"})
_SEP = "\x1e"  # between messages: "ab" + "c" must not hash like "a" + "bc"


def _digest(data: bytes) -> int:
    return int.from_bytes(blake2b(data, digest_size=8).digest(), "little")


def _text(content: Any, limit: int) -> str:
    if isinstance(content, str):
        return content[:limit]
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
        out = []
        size = 0
        for part in content:
            text = part.get("text") if isinstance(part, dict) else None
            if isinstance(text, str):
                out.append(text[: limit - size])
                size += len(out[-1])
                if size >= limit:
                    break
        return "".join(out)
    return ""


def chat_key(messages: Any, limit: int) -> int | None:
    """The key of a chat request's ``messages`` (None when there is nothing to hash)."""
    if not isinstance(messages, list):
        return None
    parts = []
    size = 0
    for m in messages:
        if not isinstance(m, dict):
            break
        role = m.get("role")
        text = _text(m.get("content"), limit - size)
        parts.append(f"{role}:{text}")
        size += len(text)
        if size >= limit or role not in _LEADING:
            break
    if not parts:
        return None
    return _digest(_SEP.join(parts).encode("utf-8", "surrogatepass"))


def completion_key(prompt: Any, limit: int) -> int | None:
    """The key of a completions request's ``prompt``."""
    if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int):
        prompt = prompt[0]  # a batch: its first prompt decides
    if isinstance(prompt, str):
        return _digest(prompt[:limit].encode("utf-8", "surrogatepass")) if prompt else None
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt[: limit // 4]):
        return _digest(b"ids:" + ",".join(map(str, prompt[: limit // 4])).encode())
    return None


__all__ = ["chat_key", "completion_key"]
