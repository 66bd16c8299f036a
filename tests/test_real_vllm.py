"""The real-vLLM fixture serves for real: official openai client, streaming, auth, metrics.

The model has random weights, so its text is garbage: these tests assert on
shapes, token counts and finish reasons, never on generated text.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import pytest

from tests.support.real_vllm import VllmServer, parse_metrics
from tests.support.vllm_fixture import real_vllm, require_vllm_venv, slow_vllm  # noqa: F401

MESSAGES = [{"role": "user", "content": "Say something."}]
EXACT = {"temperature": 0, "extra_body": {"ignore_eos": True}}


def _client(server: VllmServer, **kw: object) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=server.base_url, api_key=server.api_key, max_retries=0, timeout=60, **kw
    )


def _wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


# -- no server needed ---------------------------------------------------------


def test_missing_venv_fails_with_install_hint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VLLM_VENV", str(tmp_path / "nope"))
    with pytest.raises(pytest.fail.Exception) as info:  # a failure, not a skip
        require_vllm_venv()
    assert "run `bash .ci/install-vllm` first" in str(info.value)


def test_parse_metrics() -> None:
    text = (
        "# HELP vllm:num_requests_running Number of requests.\n"
        "# TYPE vllm:num_requests_running gauge\n"
        'vllm:num_requests_running{engine="0",model_name="tiny"} 2.0\n'
        'vllm:num_requests_running{engine="1",model_name="tiny"} 1.0\n'
        'vllm:e2e_request_latency_seconds_bucket{engine="0",le="0.3",model_name="tiny"} 4.0\n'
        "process_open_fds 12\n"
        "garbage line\n"
    )
    m = parse_metrics(text)
    assert m["vllm:num_requests_running"] == 3.0
    assert m['vllm:num_requests_running{engine="1",model_name="tiny"}'] == 1.0
    assert m["process_open_fds"] == 12.0
    assert "vllm:e2e_request_latency_seconds_bucket" not in m
    assert m['vllm:e2e_request_latency_seconds_bucket{engine="0",le="0.3",model_name="tiny"}'] == 4.0


# -- the fast server -----------------------------------------------------------


def test_server_attributes(real_vllm: VllmServer) -> None:  # noqa: F811
    assert real_vllm.model == "tiny"
    assert real_vllm.base_url == real_vllm.root_url + "/v1"
    assert real_vllm.root_url.startswith("http://127.0.0.1:")
    assert real_vllm.is_running() and real_vllm.pid > 0
    assert httpx.get(real_vllm.root_url + "/health", timeout=10).status_code == 200
    models = _client(real_vllm).models.list()
    assert [m.id for m in models.data] == ["tiny"]


def test_chat_completion_with_usage(real_vllm: VllmServer) -> None:  # noqa: F811
    resp = _client(real_vllm).chat.completions.create(
        model=real_vllm.model, messages=MESSAGES, max_tokens=16, **EXACT  # type: ignore[arg-type]
    )
    choice = resp.choices[0]
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str)
    assert choice.finish_reason == "length"
    assert resp.usage is not None
    assert resp.usage.completion_tokens == 16
    assert resp.usage.prompt_tokens > 0
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + 16


@pytest.mark.parametrize("n", [1, 7, 300])
def test_exact_token_counts(real_vllm: VllmServer, n: int) -> None:  # noqa: F811
    client = _client(real_vllm)
    chat = client.chat.completions.create(
        model=real_vllm.model, messages=MESSAGES, max_tokens=n, **EXACT  # type: ignore[arg-type]
    )
    assert chat.usage is not None and chat.usage.completion_tokens == n
    assert chat.choices[0].finish_reason == "length"
    comp = client.completions.create(model=real_vllm.model, prompt="hello world", max_tokens=n, **EXACT)  # type: ignore[arg-type]
    assert comp.usage is not None and comp.usage.completion_tokens == n
    assert comp.choices[0].finish_reason == "length"


def test_max_tokens_bounds_output(real_vllm: VllmServer) -> None:  # noqa: F811
    client = _client(real_vllm)
    for seed in range(3):  # sampling may hit EOS early; it may never exceed max_tokens
        resp = client.chat.completions.create(
            model=real_vllm.model, messages=MESSAGES, max_tokens=5, temperature=1.0, seed=seed
        )
        assert resp.usage is not None and 1 <= resp.usage.completion_tokens <= 5
        assert resp.choices[0].finish_reason in {"stop", "length"}


def test_prompt_tokens_are_deterministic(real_vllm: VllmServer) -> None:  # noqa: F811
    client = _client(real_vllm)
    a = client.completions.create(model=real_vllm.model, prompt="abc " * 20, max_tokens=1)
    b = client.completions.create(model=real_vllm.model, prompt="abc " * 40, max_tokens=1)
    assert a.usage is not None and b.usage is not None
    assert 1 < a.usage.prompt_tokens < b.usage.prompt_tokens


def test_stream_ends_with_finish_reason_and_usage(real_vllm: VllmServer) -> None:  # noqa: F811
    stream = _client(real_vllm).chat.completions.create(
        model=real_vllm.model,
        messages=MESSAGES,
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
        **EXACT,  # type: ignore[arg-type]
    )
    chunks = list(stream)
    with_choices = [c for c in chunks if c.choices]
    assert with_choices[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in with_choices if c.choices[0].finish_reason]
    assert finishes == ["length"]
    assert with_choices[-1].choices[0].finish_reason == "length"
    last = chunks[-1]
    assert last.choices == []  # the usage chunk comes after the finish_reason chunk
    assert last.usage is not None
    assert last.usage.completion_tokens == 12
    assert last.usage.total_tokens == last.usage.prompt_tokens + 12


def test_stream_raw_sse(real_vllm: VllmServer) -> None:  # noqa: F811
    body = {
        "model": real_vllm.model,
        "prompt": "hi",
        "max_tokens": 5,
        "stream": True,
        "temperature": 0,
        "ignore_eos": True,
    }
    with httpx.stream(
        "POST", real_vllm.base_url + "/completions", json=body, headers=real_vllm.headers, timeout=30
    ) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in resp.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(line[6:]) for line in lines[:-1]]
    assert events[-1]["choices"][0]["finish_reason"] == "length"


def test_missing_or_wrong_key_is_401(real_vllm: VllmServer) -> None:  # noqa: F811
    body = {"model": real_vllm.model, "messages": MESSAGES, "max_tokens": 1}
    resp = httpx.post(real_vllm.base_url + "/chat/completions", json=body, timeout=10)
    assert resp.status_code == 401
    assert resp.json() == {"error": "Unauthorized"}
    wrong = openai.OpenAI(base_url=real_vllm.base_url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.chat.completions.create(model=real_vllm.model, messages=MESSAGES, max_tokens=1)  # type: ignore[arg-type]


def test_metrics(real_vllm: VllmServer) -> None:  # noqa: F811
    before = real_vllm.metrics()
    assert "vllm:num_requests_running" in before
    assert before["vllm:num_requests_running"] == 0
    assert "vllm:generation_tokens_total" in before
    _client(real_vllm).completions.create(model=real_vllm.model, prompt="x", max_tokens=9, **EXACT)  # type: ignore[arg-type]

    def delta() -> float:
        return real_vllm.metrics()["vllm:generation_tokens_total"] - before["vllm:generation_tokens_total"]

    assert _wait_for(lambda: delta() >= 9)
    assert delta() == 9


def test_api_key_is_not_exposed(real_vllm: VllmServer) -> None:  # noqa: F811
    assert real_vllm.api_key and len(real_vllm.api_key) >= 20
    assert real_vllm.api_key not in repr(real_vllm)
    assert real_vllm.api_key not in real_vllm.log_tail(10_000)
    cmdline = Path(f"/proc/{real_vllm.pid}/cmdline").read_bytes().decode(errors="replace")
    assert real_vllm.api_key not in cmdline
    assert "vllm.entrypoints.openai.api_server" in cmdline


# -- the slow server -----------------------------------------------------------


def test_slow_model_is_slow_and_cancellable(slow_vllm: VllmServer) -> None:  # noqa: F811
    before = slow_vllm.metrics()["vllm:generation_tokens_total"]
    body = {
        "model": slow_vllm.model,
        "messages": MESSAGES,
        "max_tokens": 2000,  # ~1 minute of generation if not cancelled
        "stream": True,
        "temperature": 0,
        "ignore_eos": True,
    }
    with httpx.stream(
        "POST", slow_vllm.base_url + "/chat/completions", json=body, headers=slow_vllm.headers, timeout=60
    ) as resp:
        assert resp.status_code == 200
        lines = resp.iter_lines()
        t0 = None
        n = 0
        for line in lines:
            if line.startswith("data: "):
                n += 1
                if n == 2:
                    t0 = time.monotonic()
                if n == 12:
                    break
        assert t0 is not None
        per_token = (time.monotonic() - t0) / 10
        assert slow_vllm.metrics()["vllm:num_requests_running"] == 1
    # Closing the stream is a client disconnect: vLLM must abort the request.
    assert _wait_for(lambda: slow_vllm.metrics()["vllm:num_requests_running"] == 0, timeout=15)
    generated = slow_vllm.metrics()["vllm:generation_tokens_total"] - before
    assert generated < 1000, f"generation not cancelled: {generated} tokens"
    assert per_token > 0.005, f"slow model too fast: {per_token * 1000:.1f} ms/token"

