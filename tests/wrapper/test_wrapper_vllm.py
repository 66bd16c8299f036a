"""The wrapper in front of a real vLLM (CPU build, tiny random model), via the official client.

Random-model text is garbage: assert on lengths, shapes and wrapper-vs-direct equality
(temperature 0 is deterministic), never on the words.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import openai
import pytest

from tests.wrapper._wrapper_servers import Wrapper
from wrapper.sse import decode_chat_stream

MSG = [{"role": "user", "content": "Tell me a story about a cat."}]
EXACT = {"temperature": 0, "extra_body": {"ignore_eos": True}}


def sync_client(url: str, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=60)


def strip(obj) -> dict:
    d = obj.model_dump()
    for k in ("id", "created"):
        d.pop(k, None)
    return d


def test_chat_completion_same_as_direct(real_vllm, vllm_wrapper):
    via = sync_client(vllm_wrapper.base_url).chat.completions.create(model="tiny", messages=MSG, max_tokens=12, **EXACT)
    direct = sync_client(real_vllm.base_url, real_vllm.api_key).chat.completions.create(
        model="tiny", messages=MSG, max_tokens=12, **EXACT
    )
    assert via.usage.completion_tokens == 12 and via.choices[0].finish_reason == "length"
    assert strip(via) == strip(direct)


def test_default_model_is_the_served_one(vllm_wrapper):
    r = httpx.post(vllm_wrapper.base_url + "/chat/completions", json={"messages": MSG, "max_tokens": 2}, timeout=30)
    assert r.status_code == 200 and r.json()["model"] == "tiny"
    r = httpx.post(vllm_wrapper.base_url + "/completions", json={"prompt": "hi", "max_tokens": 2}, timeout=30)
    assert r.status_code == 200 and r.json()["model"] == "tiny"


def test_stream_with_usage(vllm_wrapper):
    stream = sync_client(vllm_wrapper.base_url).chat.completions.create(
        model="tiny", messages=MSG, max_tokens=20, stream=True, stream_options={"include_usage": True}, **EXACT
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 20
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    full = sync_client(vllm_wrapper.base_url).chat.completions.create(model="tiny", messages=MSG, max_tokens=20, **EXACT)
    assert text == full.choices[0].message.content


def test_completions_streamed_and_not(real_vllm, vllm_wrapper):
    c = sync_client(vllm_wrapper.base_url)
    out = c.completions.create(model="tiny", prompt="Once upon a time", max_tokens=9, **EXACT)
    direct = sync_client(real_vllm.base_url, real_vllm.api_key).completions.create(
        model="tiny", prompt="Once upon a time", max_tokens=9, **EXACT
    )
    assert out.usage.completion_tokens == 9 and strip(out) == strip(direct)
    chunks = list(
        c.completions.create(
            model="tiny", prompt="Once upon a time", max_tokens=9, stream=True,
            stream_options={"include_usage": True}, **EXACT
        )
    )
    assert "".join(ch.choices[0].text for ch in chunks if ch.choices) == out.choices[0].text
    assert chunks[-1].usage.completion_tokens == 9


async def _async_round(url: str) -> list[int]:
    c = openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=0, timeout=60)

    async def plain(n: int) -> int:
        r = await c.chat.completions.create(model="tiny", messages=MSG, max_tokens=n, **EXACT)
        return r.usage.completion_tokens

    async def streamed(n: int) -> int:
        s = await c.chat.completions.create(
            model="tiny", messages=MSG, max_tokens=n, stream=True, stream_options={"include_usage": True}, **EXACT
        )
        last = None
        async for chunk in s:
            last = chunk
        return last.usage.completion_tokens

    try:
        return await asyncio.gather(*[plain(n) for n in (3, 5, 7, 9)], *[streamed(n) for n in (4, 6, 8, 10)])
    finally:
        await c.close()


def test_async_client_concurrent(vllm_wrapper):
    assert asyncio.run(_async_round(vllm_wrapper.base_url)) == [3, 5, 7, 9, 4, 6, 8, 10]


def test_tools_and_response_format_pass_through(vllm_wrapper):
    c = sync_client(vllm_wrapper.base_url)
    tools = [{"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}]
    r = c.chat.completions.create(model="tiny", messages=MSG, max_tokens=4, tools=tools, tool_choice="none", **EXACT)
    assert r.usage.completion_tokens == 4
    # This vLLM runs without --enable-auto-tool-choice: its 400 comes through unchanged.
    with pytest.raises(openai.BadRequestError) as exc:
        c.chat.completions.create(model="tiny", messages=MSG, max_tokens=4, tools=tools, tool_choice="auto")
    assert "tool" in exc.value.message
    r = c.chat.completions.create(model="tiny", messages=MSG, max_tokens=4, response_format={"type": "json_object"})
    assert r.choices[0].finish_reason in ("length", "stop")


def test_vllm_errors_reach_the_client_as_usual(vllm_wrapper):
    c = sync_client(vllm_wrapper.base_url)
    with pytest.raises(openai.BadRequestError) as exc:
        c.chat.completions.create(model="tiny", messages=MSG, max_tokens=100_000)
    assert exc.value.param == "max_tokens"
    with pytest.raises(openai.BadRequestError):
        list(c.chat.completions.create(model="tiny", messages=MSG, max_tokens=100_000, stream=True))
    with pytest.raises(openai.NotFoundError) as exc:
        c.chat.completions.create(model="not-served", messages=MSG, max_tokens=2)
    with pytest.raises(openai.BadRequestError):
        c.completions.create(model="tiny", prompt="word " * 5000, max_tokens=2)


def test_models_and_health(vllm_wrapper):
    ids = [m.id for m in sync_client(vllm_wrapper.base_url).models.list()]
    assert ids == ["tiny"]
    assert httpx.get(vllm_wrapper.url + "/models").json()["data"][0]["id"] == "tiny"
    h = httpx.get(vllm_wrapper.url + "/health").json()
    assert h["status"] == "healthy" and h["vllm_available"] is True and h["model"] == "tiny"


def test_simple_chat_against_vllm(vllm_wrapper):
    body = {"messages": MSG, "max_tokens": 16, "temperature": 0}
    r = httpx.post(vllm_wrapper.url + "/chat", json=body, timeout=30)
    data = r.json()
    assert set(data) == {"content", "model", "usage", "finish_reason"}
    assert data["model"] == "tiny" and data["usage"]["total_tokens"] > data["usage"]["completion_tokens"] > 0
    s = httpx.post(vllm_wrapper.url + "/chat", json={**body, "stream": True}, timeout=30)
    assert s.text.endswith("data: [DONE]\n\n")
    assert decode_chat_stream(s.text) == data["content"].replace("\r\n", "\n").replace("\r", "\n")


def test_chat_default_max_tokens_larger_than_context(real_vllm):
    # vLLM refuses max_tokens > its context (400, param max_tokens); /chat then lets vLLM use
    # the room left instead of failing a request that never asked for that many tokens.
    w = Wrapper(real_vllm.base_url, api_key=real_vllm.api_key, default_max_tokens=100_000)
    try:
        with httpx.stream("POST", w.url + "/chat", json={"messages": MSG, "stream": True, "top_p": 0.5},
                          timeout=30) as r:
            assert r.status_code == 200
            assert next(r.iter_lines()).startswith("data: ")
        r = httpx.post(w.url + "/chat", json={"messages": MSG, "max_tokens": 100_000})
        assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"
    finally:
        w.stop()
    assert _wait_idle(real_vllm) == 0


def test_wrong_backend_key_is_a_gateway_error(real_vllm):
    w = Wrapper(real_vllm.base_url, api_key="definitely-wrong-key")
    try:
        r = httpx.post(w.base_url + "/chat/completions", json={"messages": MSG, "max_tokens": 2})
        assert r.status_code == 502 and "VLLM_API_KEY" in r.json()["error"]["message"]
        assert "definitely-wrong-key" not in r.text + w.log()
    finally:
        w.stop()


# -- cancellation and timeouts against the slow model (~27 ms a token) ---------------------------


def _wait_idle(server, timeout: float = 5.0) -> float:
    deadline = time.monotonic() + timeout
    while True:
        running = server.metrics().get("vllm:num_requests_running", 0.0)
        if running == 0 or time.monotonic() > deadline:
            return running
        time.sleep(0.05)


@pytest.mark.parametrize(
    "path,body",
    [
        ("/v1/chat/completions", {"messages": MSG}),
        ("/v1/completions", {"prompt": "Once upon a time"}),
        ("/chat", {"messages": MSG}),
    ],
)
def test_client_disconnect_cancels_generation(slow_vllm, slow_vllm_wrapper, path, body):
    assert _wait_idle(slow_vllm) == 0
    before = slow_vllm.metrics().get("vllm:generation_tokens_total", 0.0)
    left = slow_vllm_wrapper.metric("vllm_wrapper_requests_total", route=path, method="POST", status="499")
    payload = {**body, "max_tokens": 1500, "stream": True, "temperature": 0, "ignore_eos": True}
    with httpx.stream("POST", slow_vllm_wrapper.url + path, json=payload, timeout=30) as r:
        assert r.status_code == 200
        got = 0
        for _ in r.iter_raw():
            got += 1
            if got >= 3:
                break
        assert slow_vllm.metrics()["vllm:num_requests_running"] == 1
    assert _wait_idle(slow_vllm) == 0
    generated = slow_vllm.metrics().get("vllm:generation_tokens_total", 0.0) - before
    assert generated < 300, generated  # 1500 would take ~40 s; it stopped within moments
    # Counted as the client closing the request (499), not as a 200.
    deadline = time.monotonic() + 10
    while slow_vllm_wrapper.metric("vllm_wrapper_requests_total", route=path, method="POST", status="499") == left:
        assert time.monotonic() < deadline, "the stream the client left was not counted as 499"
        time.sleep(0.05)
    assert slow_vllm_wrapper.metric("vllm_wrapper_requests_total", route=path, method="POST", status="499") == left + 1


def test_non_json_content_type_is_a_400_as_vllm_answers_it(real_vllm, vllm_wrapper):
    # vLLM 0.32 refuses it (vllm/entrypoints/serve/utils/api_utils.py validate_json_request -> 400);
    # the wrapper answers the same before anything reaches vLLM.
    body = b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}'
    plain = {"Content-Type": "text/plain"}
    direct = httpx.post(real_vllm.base_url + "/chat/completions", content=body,
                        headers={**plain, "Authorization": f"Bearer {real_vllm.api_key}"})
    via = httpx.post(vllm_wrapper.base_url + "/chat/completions", content=body, headers=plain)
    assert direct.status_code == via.status_code == 400
    # Both OpenAI-shaped (vLLM 0.32 types it "Bad Request"; the wrapper uses its BadRequestError).
    assert set(direct.json()["error"]) >= {"message", "type"} and via.json()["error"]["param"] == "Content-Type"
    with pytest.raises(openai.BadRequestError):  # what the official client raises for either
        sync_client(vllm_wrapper.base_url).chat.completions.create(
            model="tiny", messages=MSG, max_tokens=2, extra_headers={"Content-Type": "text/plain"})


def test_n_over_the_cap_never_reaches_vllm(real_vllm, vllm_wrapper):
    # The case: n=1000 queued 872 sequences in vLLM. Now a 400 naming n and its limit.
    succeeded = real_vllm.metrics().get("vllm:request_success_total", 0.0)
    with pytest.raises(openai.BadRequestError) as exc:
        sync_client(vllm_wrapper.base_url).chat.completions.create(model="tiny", messages=MSG, n=1000, max_tokens=4)
    assert exc.value.param == "n" and "at most 4" in exc.value.message
    assert _wait_idle(real_vllm) == 0
    assert real_vllm.metrics().get("vllm:request_success_total", 0.0) == succeeded


def test_client_leaving_a_non_streamed_request_cancels_generation(slow_vllm, slow_vllm_wrapper):
    assert _wait_idle(slow_vllm) == 0
    before = slow_vllm.metrics().get("vllm:generation_tokens_total", 0.0)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(slow_vllm_wrapper.base_url + "/chat/completions", timeout=1.0,
                   json={"messages": MSG, "max_tokens": 1500, "temperature": 0, "ignore_eos": True})
    assert _wait_idle(slow_vllm) == 0
    assert slow_vllm.metrics().get("vllm:generation_tokens_total", 0.0) - before < 300


def test_timeout_is_504_and_aborts_generation(slow_vllm):
    w = Wrapper(slow_vllm.base_url, api_key=slow_vllm.api_key, timeout=1)
    try:
        assert _wait_idle(slow_vllm) == 0
        t = time.monotonic()
        r = httpx.post(w.base_url + "/chat/completions", timeout=30,
                       json={"messages": MSG, "max_tokens": 1500, "temperature": 0, "ignore_eos": True})
        assert r.status_code == 504 and r.json()["error"]["type"] == "GatewayTimeoutError"
        assert time.monotonic() - t >= 1  # after VLLM_TIMEOUT, not before; 1,500 tokens would take ~40 s
        assert _wait_idle(slow_vllm) == 0
    finally:
        w.stop()
