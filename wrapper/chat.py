"""``POST /chat``: the simple interface of the original wrapper, streamed or not."""

from __future__ import annotations

from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from .errors import APIError
from .metrics import Metrics
from .sse import DONE, EventSplitter, encode_piece, event_data
from .streaming import Relay


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str = Field(max_length=10_000_000)


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    messages: list[Message] = Field(min_length=1, max_length=10_000)
    max_tokens: int | None = Field(default=None, ge=1, le=10_000_000)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    stream: StrictBool = False
    model: str | None = Field(default=None, max_length=1000, description="defaults to VLLM_MODEL / the served model")


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class ChatResponse(BaseModel):
    content: str
    model: str
    usage: Usage
    finish_reason: str | None = None


def upstream_body(
    req: ChatRequest, model: str | None, default_max_tokens: int | None, default_temperature: float
) -> dict:
    body: dict = {"messages": [m.model_dump() for m in req.messages]}
    if model:
        body["model"] = model
    max_tokens = req.max_tokens if req.max_tokens is not None else default_max_tokens
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    body["temperature"] = req.temperature if req.temperature is not None else default_temperature
    if req.top_p is not None:
        body["top_p"] = req.top_p
    if req.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def simple_answer(data: bytes, metrics: Metrics) -> dict:
    try:
        obj = orjson.loads(data)
        choice = obj["choices"][0]
        usage = obj.get("usage") or {}
        metrics.count_usage("/chat", usage)
        return {
            "content": (choice.get("message") or {}).get("content") or "",
            "model": obj.get("model") or "",
            "usage": {k: usage.get(k) or 0 for k in ("prompt_tokens", "completion_tokens", "total_tokens")},
            "finish_reason": choice.get("finish_reason"),
        }
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError):
        raise APIError(502, "the model server sent an answer the wrapper cannot read") from None


class ChatRelay(Relay):
    """Turn upstream chat-completion chunks into ``/chat`` text-piece events."""

    named_error_events = True

    def __init__(self, metrics: Metrics) -> None:
        super().__init__(metrics, "/chat")
        self._events = EventSplitter()
        self._done = False

    def transform(self, chunk: bytes) -> bytes:
        out = []
        for ev in self._events.feed(chunk):
            data = event_data(ev)
            if not data:
                continue
            if data == b"[DONE]":
                self._done = True
                out.append(DONE)
                continue
            try:
                obj = orjson.loads(data)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(obj, dict):
                continue
            if "error" in obj:
                out.append(b"event: error\ndata: " + orjson.dumps({"error": obj["error"]}) + b"\n\n")
                continue
            usage = obj.get("usage")
            if usage:
                self.metrics.count_usage("/chat", usage)
            for choice in obj.get("choices") or ():
                piece = ((choice or {}).get("delta") or {}).get("content")
                if piece:
                    out.append(encode_piece(piece))
        return b"".join(out)
