"""The routing key of a request: a 32-bit hash of the leading part of its prompt.

What is hashed, and why that part:

* chat (``messages``): the leading ``system``/``developer`` messages, at most ``limit``
  characters. Every conversation of a tenant shares its system prompt, so they all land where
  that prompt is cached. When those messages are short (under ``SHORT_SYSTEM_CHARS``: a block
  or two of KV cache, no prefix worth keeping, or a generic "You are a helpful assistant")
  the *first* other message (normally the first user turn) is hashed with them: a
  conversation's later turns repeat exactly these messages, so every turn of one conversation
  gets the key of its first turn and finds its earlier turns in that replica's cache. Hashing
  "the first N characters of everything" instead would move a short conversation to another
  replica as soon as its second turn filled those N characters.
* completions (``prompt``): its first ``limit`` characters (the first prompt of a batch;
  token-id prompts: their first ``limit // 4`` ids, about as many tokens).

CRC-32 (zlib), not Python's ``hash()`` (salted per process): every wrapper process computes
the same key for the same prompt with no coordination. Routing needs a deterministic, evenly
spread key, not a cryptographic one (the policy mixes it with each replica's 64-bit name hash);
CRC-32 is 3-4x cheaper than blake2b or SHA-1 here, about half of the ``orjson.loads`` the
proxy already does for the same body (``benchmarks/routing_bench.py --micro`` prints both).
"""

from __future__ import annotations

from typing import Any
from zlib import crc32

_LEADING = frozenset({"system", "developer"})
SHORT_SYSTEM_CHARS = 256
_SEP = "\x1e"  # between messages: "ab" + "c" must not hash like "a" + "bc"


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
        if role not in _LEADING and size >= SHORT_SYSTEM_CHARS:
            break  # a system prompt worth caching: it alone decides
        text = _text(m.get("content"), limit - size)
        parts.append(f"{role}:{text}")
        size += len(text)
        if size >= limit or role not in _LEADING:
            break
    if not parts:
        return None
    return crc32(_SEP.join(parts).encode("utf-8", "surrogatepass"))


def completion_key(prompt: Any, limit: int) -> int | None:
    """The key of a completions request's ``prompt``."""
    if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int):
        prompt = prompt[0]  # a batch: its first prompt decides
    if isinstance(prompt, str):
        return crc32(prompt[:limit].encode("utf-8", "surrogatepass")) if prompt else None
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt[: limit // 4]):
        return crc32(b"ids:" + ",".join(map(str, prompt[: limit // 4])).encode())
    return None


__all__ = ["chat_key", "completion_key"]
