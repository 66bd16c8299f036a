"""Baseline for the benchmark: a plain FastAPI + httpx pass-through (what one writes first).

    python benchmarks/_passthrough.py --port 9100 --upstream http://127.0.0.1:8000/v1 [--api-key K]
"""

from __future__ import annotations

import argparse

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse


def make_app(upstream: str, api_key: str | None) -> FastAPI:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    client = httpx.AsyncClient(base_url=upstream, headers=headers, timeout=60)
    app = FastAPI()

    async def forward(path: str, request: Request):
        body = await request.json()
        if body.get("stream"):
            req = client.build_request("POST", path, json=body)
            resp = await client.send(req, stream=True)

            async def gen():
                try:
                    async for chunk in resp.aiter_raw():
                        yield chunk
                finally:
                    await resp.aclose()

            return StreamingResponse(gen(), status_code=resp.status_code, media_type="text/event-stream")
        resp = await client.post(path, json=body)
        return JSONResponse(resp.json(), status_code=resp.status_code)

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        return await forward("/chat/completions", request)

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await forward("/completions", request)

    @app.get("/health")
    async def health():
        return {"ok": True}

    return app


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--api-key")
    a = ap.parse_args()
    uvicorn.run(make_app(a.upstream, a.api_key), host="127.0.0.1", port=a.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
