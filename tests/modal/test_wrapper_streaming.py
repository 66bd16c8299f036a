"""The autoscale wrapper as Modal runs it: the ASGI app `serve_wrapper` returns, streaming end to end.

`build_wrapper_app` is what the Modal wrapper container calls at start (with the GPU
function's URL); here the GPU side is a small fake vLLM that streams slowly over real HTTP,
and the app is served by uvicorn. Modal's own HTTPS proxy in between is not reproducible
here (see components/modal_app/README.md for checking it on a real deploy).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from components.modal_app.wrapper_asgi import build_wrapper_app
from tests.modal.conftest import SECRET_VALUES

PIECES = ["Hel", "lo", ",\n", "wor", "ld"]
GAP = 0.3
VLLM_KEY = SECRET_VALUES["vllmApiKey"]
WRAPPER_KEY = SECRET_VALUES["wrapperApiKey"]
PROXY_ID, PROXY_SECRET = SECRET_VALUES["modalProxyTokenId"], SECRET_VALUES["modalProxyTokenSecret"]


def modal_proxy_auth(app):
    """Modal's web proxy in front of a `requires_proxy_auth=True` endpoint: without the token's
    Modal-Key/Modal-Secret headers it answers 401 and the request never reaches a container
    (https://modal.com/docs/guide/webhook-proxy-auth: "modal-http: missing credentials for
    proxy authorization")."""

    async def guarded(scope, receive, send):
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            if headers.get(b"modal-key") != PROXY_ID.encode() or headers.get(b"modal-secret") != PROXY_SECRET.encode():
                response = Response("modal-http: missing credentials for proxy authorization\n", status_code=401)
                return await response(scope, receive, send)
        return await app(scope, receive, send)

    return guarded


def fake_vllm(model: str, health_hits: list[float], calls: list[str] | None = None) -> Starlette:
    async def health(request: Request) -> Response:
        health_hits.append(time.monotonic())
        return Response(status_code=200)

    async def models(request: Request) -> Response:
        if calls is not None:
            calls.append(request.url.path)
        return JSONResponse({"object": "list", "data": [{"id": model, "object": "model"}]})

    async def chat(request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {VLLM_KEY}":
            return JSONResponse({"error": {"message": "Unauthorized"}}, status_code=401)
        body = await request.json()

        async def events():
            for i, piece in enumerate(PIECES):
                chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": body["model"],
                         "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}  # fmt: skip
                yield f"data: {json.dumps(chunk)}\n\n".encode()
                await asyncio.sleep(GAP)
            last = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": body["model"],
                    "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}  # fmt: skip
            yield f"data: {json.dumps(last)}\n\ndata: [DONE]\n\n".encode()

        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(routes=[Route("/health", health), Route("/v1/models", models),
                             Route("/v1/chat/completions", chat, methods=["POST"])])  # fmt: skip


class Served:
    def __init__(self, app) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on", loop="asyncio")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "server did not start"
            time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


class Deployment:
    """The wrapper app as Modal starts it, in front of a fake GPU side."""

    def __init__(self, url: str, spec) -> None:
        self.url = url
        self.spec = spec
        self.health_hits: list[float] = []
        self.model_calls: list[str] = []
        self.vllm_url = ""
        self.gpu_containers: int | Exception = 1

    async def gpu_runners(self) -> int:  # stands in for serve_vllm.get_current_stats()
        if isinstance(self.gpu_containers, Exception):
            raise self.gpu_containers
        return self.gpu_containers


@pytest.fixture
def modal_wrapper(dev, monkeypatch) -> Iterator[Deployment]:
    spec, _ = dev
    # The container's environment: the Modal secret's keys, the function env, then what the build sets.
    secret = {"VLLM_API_KEY": VLLM_KEY, "VLLM_WRAPPER_API_KEY": WRAPPER_KEY,
              "VLLM_MODAL_KEY": PROXY_ID, "VLLM_MODAL_SECRET": PROXY_SECRET}  # fmt: skip
    for key, value in {**secret, **spec.wrapper_env}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("VLLM_BASE_URL", "http://unset.invalid/v1")  # restored after the test
    deployment = Deployment("", spec)
    upstream = Served(modal_proxy_auth(fake_vllm(spec.served_model_name, deployment.health_hits, deployment.model_calls)))
    deployment.vllm_url = upstream.url
    wrapper = None
    try:
        app = build_wrapper_app(spec, vllm_url=upstream.url, gpu_runners=deployment.gpu_runners)
        wrapper = Served(app)
        deployment.url = wrapper.url
        yield deployment
    finally:
        if wrapper:
            wrapper.stop()
        upstream.stop()


def test_streamed_chat_arrives_piece_by_piece_through_the_modal_wrapper_app(modal_wrapper):
    url = modal_wrapper.url
    arrivals: list[tuple[float, str]] = []
    started = time.monotonic()
    body = {"model": "llama-3.1-8b-instruct", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    headers = {"Authorization": f"Bearer {WRAPPER_KEY}"}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, headers=headers, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                arrivals.append((time.monotonic() - started, line[6:]))
    assert arrivals[-1][1] == "[DONE]"
    text = "".join(
        choice["delta"].get("content") or ""
        for _, data in arrivals[:-1]
        for choice in json.loads(data)["choices"]
    )
    assert text == "".join(PIECES)
    # Streamed, not buffered: the first piece came long before the last one was produced.
    first, last = arrivals[0][0], arrivals[-1][0]
    assert last - first >= GAP * (len(PIECES) - 1) * 0.8


def test_wrapper_key_is_enforced_and_the_old_service_info_answers(modal_wrapper):
    url = modal_wrapper.url
    body = {"model": "llama-3.1-8b-instruct", "messages": [{"role": "user", "content": "hi"}]}
    assert httpx.post(f"{url}/v1/chat/completions", json=body, timeout=10).status_code == 401
    info = httpx.get(f"{url}/", headers={"Authorization": f"Bearer {WRAPPER_KEY}"}, timeout=10).json()
    assert info["architecture"] == {
        "wrapper": "Always-on (no GPU)",
        "vllm": "Auto-scale to zero (with GPU)",
        "scaledown_window": "2 minutes",
    }
    assert info["service"] == "vllm-autoscale" and info["model"] == "llama-3.1-8b-instruct" and info["version"]


def test_health_does_not_wake_a_scaled_to_zero_gpu(modal_wrapper):
    auth = {"Authorization": f"Bearer {WRAPPER_KEY}"}
    modal_wrapper.gpu_containers = 0
    asleep = httpx.get(f"{modal_wrapper.url}/health", headers=auth, timeout=10).json()
    assert asleep["wrapper_status"] == "healthy" and asleep["scale_state"] == "scaled_to_zero"
    assert asleep["vllm_available"] is False and asleep["idle_timeout"] == 120
    assert modal_wrapper.health_hits == []  # vLLM was not probed, so Modal started no GPU container
    modal_wrapper.gpu_containers = 1
    awake = httpx.get(f"{modal_wrapper.url}/health", headers=auth, timeout=10).json()
    assert awake["vllm_available"] is True and awake["vllm_status"] == "available"
    assert len(modal_wrapper.health_hits) == 1


def test_health_does_not_wake_the_gpu_when_modal_refuses_the_stats_call(modal_wrapper):
    """`get_current_stats()` can fail (no permission, Modal's API down): that must not fall back
    to probing vLLM, which would start a GPU container through Modal."""
    from modal.exception import InvalidError

    auth = {"Authorization": f"Bearer {WRAPPER_KEY}"}
    for refusal in (InvalidError("stats refused"), ConnectionError("Modal API unreachable")):
        modal_wrapper.gpu_containers = refusal
        answer = httpx.get(f"{modal_wrapper.url}/health", headers=auth, timeout=10)
        assert answer.status_code == 200
        body = answer.json()
        assert body["wrapper_status"] == "healthy" and body["scale_state"] == "unknown"
        assert body["vllm_status"] == "unknown" and body["vllm_available"] is False
    assert modal_wrapper.health_hits == [] and modal_wrapper.model_calls == []  # vLLM never called


def test_the_gpu_endpoint_takes_only_the_wrapper_with_the_proxy_token(modal_wrapper, dev):
    """autoscale: serve_vllm is behind Modal's proxy auth; the wrapper sends the stack's token."""
    _, module = dev
    assert module.serve_vllm.info().web_info.unauthenticated is False  # requires_proxy_auth=True
    assert module.serve_wrapper.info().web_info.unauthenticated is True  # clients use the wrapper key
    body = {"model": "llama-3.1-8b-instruct", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    # A stranger with vLLM's key but no proxy token is stopped before any GPU container starts.
    direct = httpx.post(f"{modal_wrapper.vllm_url}/v1/chat/completions", json=body,
                        headers={"Authorization": f"Bearer {VLLM_KEY}"}, timeout=10)  # fmt: skip
    assert direct.status_code == 401 and "proxy authorization" in direct.text
    # Through the wrapper the same request passes Modal's check and streams.
    with httpx.stream("POST", f"{modal_wrapper.url}/v1/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {WRAPPER_KEY}"}, timeout=30) as response:  # fmt: skip
        assert response.status_code == 200
        assert any(line == "data: [DONE]" for line in response.iter_lines())


def test_the_proxy_token_is_a_pair_and_its_value_is_never_echoed():
    from wrapper.settings import ConfigError, load_settings

    with pytest.raises(ConfigError) as error:
        load_settings(modal_key=PROXY_ID)
    assert "VLLM_MODAL_SECRET" in str(error.value) and PROXY_ID not in str(error.value)
    settings = load_settings(modal_key="", modal_secret="")  # "" is unset, as the secret writes it
    assert settings.modal_key is None and settings.modal_secret is None
