"""Soak: many concurrent streams for a while, through the wrapper and directly against vLLM.

    .venv/bin/python benchmarks/soak_bench.py [--streams 64] [--seconds 60] [--slow 3000]
                                              [--vllm-url URL --vllm-key KEY]

Starts a real vLLM (tests/support/real_vllm.py, tiny fast model; or uses --vllm-url) and the
wrapper (``python -m wrapper``) as their own processes, then runs three phases, each with
``--streams`` clients that loop streamed chat completions (64 tokens, ``ignore_eos``) for
``--seconds``:

1. through the wrapper;
2. directly against vLLM;
3. through a second wrapper while ``--slow`` connections sit open on it, each having sent half
   a request head (``VLLM_HEADER_TIMEOUT`` is raised so that none is closed: the worst case).

Each phase prints streams finished, errors, TTFT p50/p99 (time to the first chunk with text)
and, every 10 s, the wrapper's RSS. Not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import socket
import sys
import time
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.wrapper._wrapper_servers import Wrapper  # noqa: E402

MSG = [{"role": "user", "content": "Tell me a story about a cat."}]
SLOW_HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float("nan")


async def soak(base: str, key: str | None, streams: int, seconds: float, rss_pid: int | None,
               model: str = "tiny") -> dict:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = {"model": model, "messages": MSG, "max_tokens": 64, "temperature": 0, "ignore_eos": True,
            "stream": True}
    ttft: list[float] = []
    done = errors = 0
    errors_seen: dict[str, int] = {}
    stop_at = time.monotonic() + seconds
    rss: list[tuple[int, float]] = []

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal done, errors
        while time.monotonic() < stop_at:
            t0 = time.perf_counter()
            first = None
            try:
                async with session.post(base + "/chat/completions", json=body, headers=headers) as r:
                    if r.status != 200:
                        raise RuntimeError(f"HTTP {r.status}")
                    async for line in r.content:
                        if first is None and line.startswith(b"data: {") and b'"content":"' in line \
                                and b'"content":""' not in line:
                            first = time.perf_counter() - t0
                    if first is None:
                        raise RuntimeError("no text")
                ttft.append(first)
                done += 1
            except Exception as exc:  # counted, the soak goes on
                errors += 1
                kind = f"{type(exc).__name__}: {str(exc)[:60]}"
                errors_seen[kind] = errors_seen.get(kind, 0) + 1

    async def sample_rss() -> None:
        start = time.monotonic()
        while rss_pid and time.monotonic() < stop_at:
            rss.append((int(time.monotonic() - start), rss_mb(rss_pid)))
            await asyncio.sleep(10)

    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        sampler = asyncio.create_task(sample_rss())
        await asyncio.gather(*(client(session) for _ in range(streams)))
        sampler.cancel()
    if rss_pid:
        rss.append((int(seconds), rss_mb(rss_pid)))
    return {"streams": done, "errors": errors, "error_kinds": errors_seen, "ttft_p50": pct(ttft, 50) * 1000,
            "ttft_p99": pct(ttft, 99) * 1000, "rss": rss}


def report(label: str, r: dict) -> None:
    rss = "  ".join(f"{t}s:{mb:.0f}" for t, mb in r["rss"]) or "-"
    print(f"{label:<34} streams {r['streams']:>5}  errors {r['errors']:>3}  TTFT p50 {r['ttft_p50']:7.1f} ms"
          f"  p99 {r['ttft_p99']:7.1f} ms  RSS MB {rss}", flush=True)
    if r["error_kinds"]:
        print(f"{'':<34} errors: {r['error_kinds']}")


def open_slow(port: int, count: int) -> list[socket.socket]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = count + 1024
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            sys.exit(f"RLIMIT_NOFILE hard limit {hard} is below the {need} this run needs")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need if hard == resource.RLIM_INFINITY else hard, hard))
    socks = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.sendall(SLOW_HEAD)
        socks.append(s)
    return socks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vllm-url", help="use a running vLLM (base URL ending in /v1) instead of starting one")
    ap.add_argument("--vllm-key")
    ap.add_argument("--model", default="tiny", help="the served model name (with --vllm-url)")
    ap.add_argument("--streams", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--slow", type=int, default=3000, help="slow connections held open in phase 3")
    a = ap.parse_args()

    vllm = None
    wrappers: list[Wrapper] = []
    try:
        if a.vllm_url:
            vbase, vkey = a.vllm_url.rstrip("/"), a.vllm_key
        else:
            from tests.support.real_vllm import VllmServer

            print("starting a real vLLM (tiny fast model)...", flush=True)
            vllm = VllmServer("fast").start()
            vbase, vkey = vllm.base_url, vllm.api_key
        w = Wrapper(vbase, api_key=vkey, timeout=60)
        wrappers.append(w)
        print(f"{a.streams} concurrent streams for {a.seconds:g} s per phase; load average {os.getloadavg()}",
              flush=True)
        report("through the wrapper", asyncio.run(soak(w.base_url, None, a.streams, a.seconds, w.pid, a.model)))
        report("directly against vLLM", asyncio.run(soak(vbase, vkey, a.streams, a.seconds, None, a.model)))
        slow_w = Wrapper(vbase, api_key=vkey, timeout=60, header_timeout=3600)
        wrappers.append(slow_w)
        rss_before = rss_mb(slow_w.pid)
        socks = open_slow(slow_w.port, a.slow)
        print(f"{a.slow} slow connections open; wrapper RSS {rss_before:.0f} -> {rss_mb(slow_w.pid):.0f} MB",
              flush=True)
        try:
            report(f"wrapper + {a.slow} slow connections",
                   asyncio.run(soak(slow_w.base_url, None, a.streams, a.seconds, slow_w.pid, a.model)))
            still_open = sum(1 for s in socks if _open(s))
            print(f"slow connections still open at the end: {still_open}/{a.slow}")
        finally:
            for s in socks:
                s.close()
        print(f"load average at the end {os.getloadavg()}")
    finally:
        for w_ in wrappers:
            w_.stop()
        if vllm is not None:
            vllm.stop()


def _open(s: socket.socket) -> bool:
    s.setblocking(False)  # a socket with a timeout would first wait that long for data
    try:
        return s.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:  # nothing to read: still open
        return True
    except OSError:
        return False


if __name__ == "__main__":
    main()
