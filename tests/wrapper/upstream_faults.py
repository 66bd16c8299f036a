"""A real, misbehaving OpenAI-compatible upstream, run as its own process on loopback.

    python tests/wrapper/upstream_faults.py --port 9000 [--api-key KEY]

It answers like vLLM (same shapes, SSE chunks, 401 ``{"error":"Unauthorized"}``) with an
*echo* model: the answer is the last user message cut in 3-character pieces (one piece per
"token", at most ``max_tokens``), so tests can check text exactly. Faults are switched on at
run time with ``POST /_control`` (JSON, fields below) and observed with ``GET /_stats`` and
``GET /_last`` (the last generation request: body and the headers that matter).

Control fields (all optional; ``{"reset": true}`` first restores the defaults):
  fail_status / fail_count / retry_after  answer that status to the next N generation calls
  drop_count           close the connection without answering, N times
  header_delay         seconds to wait before answering a generation call
  body_delay           seconds between the first and the second half of a non-streamed answer
  token_delay          seconds between streamed pieces
  die_after            abort the connection after this many streamed pieces
  health_status / health_delay            what GET /health does
  auth_header_fail     answer 401 like vLLM even with the right key
"""

from __future__ import annotations

import argparse
import asyncio
import time

import orjson
from aiohttp import web

MODEL = "fake-echo"
DEFAULTS = {
    "fail_status": 0,
    "fail_count": 0,
    "retry_after": None,
    "drop_count": 0,
    "header_delay": 0.0,
    "body_delay": 0.0,
    "token_delay": 0.0,
    "die_after": -1,
    "health_status": 200,
    "health_delay": 0.0,
    "auth_header_fail": False,
}


class State:
    def __init__(self) -> None:
        self.cfg = dict(DEFAULTS)
        self.stats = {"requests": 0, "active_streams": 0, "cancelled_streams": 0, "completed_streams": 0,
                      "health_checks": 0, "cancelled_requests": 0}
        self.last: dict = {}


def _json(obj, status=200, headers=None) -> web.Response:
    return web.Response(body=orjson.dumps(obj), status=status, content_type="application/json", headers=headers)


def _err(message, status=400, param=None, kind="BadRequestError") -> web.Response:
    return _json({"error": {"message": message, "type": kind, "param": param, "code": status}}, status)


def make_app(api_key: str | None) -> web.Application:
    st = State()

    def authorized(request: web.Request) -> bool:
        if st.cfg["auth_header_fail"]:
            return False
        return api_key is None or request.headers.get("Authorization") == f"Bearer {api_key}"

    async def control(request: web.Request) -> web.Response:
        body = await request.json()
        if body.pop("reset", False):
            st.cfg = dict(DEFAULTS)
            st.stats = {k: 0 for k in st.stats}
            st.last = {}
        st.cfg.update(body)
        return _json(st.cfg)

    async def stats(request: web.Request) -> web.Response:
        return _json(st.stats)

    async def last(request: web.Request) -> web.Response:
        return _json(st.last)

    async def health(request: web.Request) -> web.Response:
        st.stats["health_checks"] += 1
        if st.cfg["health_delay"]:
            await asyncio.sleep(st.cfg["health_delay"])
        return web.Response(status=st.cfg["health_status"])

    async def models(request: web.Request) -> web.Response:
        if not authorized(request):
            return _json({"error": "Unauthorized"}, 401)
        return _json({"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0,
                                                  "owned_by": "vllm", "root": MODEL, "max_model_len": 4096}]})

    async def generate(request: web.Request) -> web.StreamResponse:
        chat = request.path.endswith("/chat/completions")
        st.stats["requests"] += 1
        if not authorized(request):
            return _json({"error": "Unauthorized"}, 401)
        raw = await request.read()
        st.last = {"body": raw.decode("utf-8", "replace"),
                   "headers": {str(k).lower(): v for k, v in request.headers.items()
                               if k.lower() in ("authorization", "x-request-id", "content-type")}}
        if st.cfg["drop_count"] > 0:
            st.cfg["drop_count"] -= 1
            request.transport.close()
            raise asyncio.CancelledError  # no answer at all
        if st.cfg["header_delay"]:
            try:
                await asyncio.sleep(st.cfg["header_delay"])
            except asyncio.CancelledError:  # the caller went away (handler_cancellation)
                st.stats["cancelled_requests"] += 1
                raise
        if st.cfg["fail_count"] > 0:
            st.cfg["fail_count"] -= 1
            headers = {"Retry-After": str(st.cfg["retry_after"])} if st.cfg["retry_after"] else None
            status = st.cfg["fail_status"]
            return _json({"error": {"message": f"fault {status}", "type": "Fault", "param": None,
                                    "code": status}}, status, headers)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return _err("malformed JSON", 400, None, "Bad Request")
        if not isinstance(body, dict):
            return _err("body must be an object")
        model = body.get("model", MODEL)
        if model != MODEL:
            return _err(f"The model `{model}` does not exist.", 404, "model", "NotFoundError")
        max_tokens = body.get("max_tokens", 16)
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            return _err("max_tokens must be at least 1", 400, "max_tokens")
        if max_tokens > 4096:
            return _err("max_tokens is too large for the context (4096)", 400, "max_tokens")
        if chat:
            msgs = body.get("messages")
            if not isinstance(msgs, list) or not msgs:
                return _err("messages is required", 400, "messages")
            users = [m.get("content") for m in msgs if isinstance(m, dict) and m.get("role") == "user"]
            text = users[-1] if users and isinstance(users[-1], str) else "hello"
        else:
            prompt = body.get("prompt")
            text = prompt if isinstance(prompt, str) else "hello"
        pieces = [text[i:i + 3] for i in range(0, len(text), 3)][:max_tokens] or [""]
        finish = "length" if len(pieces) >= max_tokens else "stop"
        usage = {"prompt_tokens": len(text) // 3 + 1, "completion_tokens": len(pieces),
                 "total_tokens": len(text) // 3 + 1 + len(pieces)}
        created = int(time.time())
        rid = "chatcmpl-x" if chat else "cmpl-x"
        if not body.get("stream"):
            if chat:
                choice = {"index": 0, "message": {"role": "assistant", "content": "".join(pieces)},
                          "finish_reason": finish, "logprobs": None, "token_ids": None}
                obj = "chat.completion"
            else:
                choice = {"index": 0, "text": "".join(pieces), "finish_reason": finish, "logprobs": None}
                obj = "text_completion"
            answer = _json({"id": rid, "object": obj, "created": created, "model": MODEL, "choices": [choice],
                            "usage": usage, "system_fingerprint": None, "kv_transfer_params": None})
            if not st.cfg["body_delay"]:
                return answer
            data = answer.body
            resp = web.StreamResponse(headers={"Content-Type": "application/json"})
            resp.content_length = len(data)
            await resp.prepare(request)
            await resp.write(data[: len(data) // 2])
            try:
                await asyncio.sleep(st.cfg["body_delay"])
            except asyncio.CancelledError:
                st.stats["cancelled_requests"] += 1
                raise
            await resp.write(data[len(data) // 2:])
            await resp.write_eof()
            return resp
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
        await resp.prepare(request)
        st.stats["active_streams"] += 1
        obj = "chat.completion.chunk" if chat else "text_completion"

        def chunk(choice):
            return b"data: " + orjson.dumps({"id": rid, "object": obj, "created": created, "model": MODEL,
                                             "choices": [choice]}) + b"\n\n"
        try:
            if chat:
                await resp.write(chunk({"index": 0, "delta": {"role": "assistant", "content": ""},
                                        "logprobs": None, "finish_reason": None}))
            for i, piece in enumerate(pieces):
                if i == st.cfg["die_after"]:
                    request.transport.abort()
                    return resp
                if st.cfg["token_delay"]:
                    await asyncio.sleep(st.cfg["token_delay"])
                last = i == len(pieces) - 1
                if chat:
                    c = {"index": 0, "delta": {"content": piece}, "logprobs": None,
                         "finish_reason": finish if last else None}
                else:
                    c = {"index": 0, "text": piece, "logprobs": None, "finish_reason": finish if last else None}
                await resp.write(chunk(c))
            if (body.get("stream_options") or {}).get("include_usage"):
                await resp.write(b"data: " + orjson.dumps({"id": rid, "object": obj, "created": created,
                                                           "model": MODEL, "choices": [],
                                                           "usage": usage}) + b"\n\n")
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
            st.stats["completed_streams"] += 1
        except (ConnectionResetError, ConnectionError, asyncio.CancelledError):
            st.stats["cancelled_streams"] += 1
        finally:
            st.stats["active_streams"] -= 1
        return resp

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/_control", control)
    app.router.add_get("/_stats", stats)
    app.router.add_get("/_last", last)
    app.router.add_get("/health", health)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", generate)
    app.router.add_post("/v1/completions", generate)
    return app


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--api-key", default=None)
    args = ap.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    web.run_app(make_app(args.api_key), host=args.host, port=args.port, access_log=None, print=None,
                handler_cancellation=True)


if __name__ == "__main__":
    main()
