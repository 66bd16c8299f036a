"""A local stand-in of Modal's web proxy and its request timeout, run as its own process.

    python tests/modal/web_proxy.py --port 9000 --upstream http://127.0.0.1:8001 --limit 1.5

Modelled on https://modal.com/docs/guide/webhook-timeouts (read 2026-12-02): every web
function request has a 150 s limit; "in case the Function takes more than 150 seconds to
complete, an HTTP status 303 redirect response is returned pointing at the original URL with a
special query parameter linking it [to] that request. This is the result URL [...]. The result
URL can be reloaded without triggering a new request. It will block until the request
completes." The parameter is ``__modal_function_call_id`` (the older text of the same page:
"an appended __modal_function_call_id=fc-123abc query parameter").

What "complete" means for a streamed response is not spelled out there; Modal's streaming
guide (https://modal.com/docs/guide/streaming-endpoints) streams SSE from web functions for as
long as the generator runs. So this stand-in redirects only a request whose response has not
*started* (no status line and headers from the app) within ``--limit`` seconds; a started
response is passed through, unbuffered, however long it runs. A real account confirms it
(components/modal_app/README.md).

``GET /__proxy/stats`` (answered by the stand-in itself): how many 303s it sent.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools

import aiohttp
from aiohttp import web

CALL_ID = "__modal_function_call_id"
HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "host"})


def make_app(upstream: str, limit: float) -> web.Application:
    calls: dict[str, asyncio.Future[aiohttp.ClientResponse]] = {}  # call id -> the app's response
    ids = itertools.count(1)
    stats = {"redirects": 0, "results": 0}
    session: aiohttp.ClientSession | None = None

    async def start(_: web.Application) -> None:
        nonlocal session
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None), auto_decompress=False)

    async def stop(_: web.Application) -> None:
        if session is not None:
            await session.close()

    async def relay(request: web.Request, resp: aiohttp.ClientResponse) -> web.StreamResponse:
        headers = {k: v for k, v in resp.headers.items() if k.lower() not in HOP_BY_HOP}
        out = web.StreamResponse(status=resp.status, headers=headers)
        await out.prepare(request)
        try:
            async for chunk in resp.content.iter_any():
                await out.write(chunk)
            await out.write_eof()
        finally:
            resp.close()
        return out

    async def proxy(request: web.Request) -> web.StreamResponse:
        if request.path == "/__proxy/stats":
            return web.json_response(stats)
        call_id = request.query.get(CALL_ID)
        if call_id is not None:  # the result URL: blocks until the original request completes
            call = calls.pop(call_id, None)
            if call is None:
                return web.json_response({"detail": "unknown or already fetched result"}, status=404)
            stats["results"] += 1
            return await relay(request, await call)
        assert session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        body = await request.read()
        url = upstream + request.path_qs
        task = asyncio.ensure_future(session.request(request.method, url, data=body, headers=headers))
        done, _ = await asyncio.wait((task,), timeout=limit)
        if not done:  # not started within the limit: the 303, and the call goes on
            cid = f"fc-{next(ids)}"
            calls[cid] = task
            stats["redirects"] += 1
            location = request.url.update_query({CALL_ID: cid})
            return web.Response(status=303, headers={"Location": str(location.relative())})
        return await relay(request, task.result())

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_route("*", "/{tail:.*}", proxy)
    return app


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--limit", type=float, default=150.0)
    args = ap.parse_args()
    app = make_app(args.upstream.rstrip("/"), args.limit)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
