"""Benchmark: the wrapper vs talking to vLLM directly vs a plain FastAPI + httpx pass-through.

    .venv/bin/python benchmarks/wrapper_bench.py [--quick] [--vllm-url URL --vllm-key KEY]

Everything comes from one run on this machine: it starts a real vLLM (tests/support/real_vllm.py,
tiny fast model; or uses --vllm-url), the fast echo upstream (tests/wrapper/upstream_faults.py),
the wrapper (``python -m wrapper``) and the baseline (benchmarks/_passthrough.py), each as its
own process, and prints a side-by-side table. Not a test: it prints figures.

- Latency: sequential non-streamed chat completions (16 tokens), requests interleaved
  round-robin across the three targets so drift hits all alike; p50/p99.
- TTFT: streamed chat completions, time to the first chunk carrying generated text.
- Per-chunk overhead: (streamed total via X - direct) / chunks, for 256-token streams.
- CPU: utime+stime of the server process (/proc/<pid>/stat, 10 ms ticks) over a phase, divided
  by its requests or streamed chunks (direct column: vLLM's API server process). The
  sequential figure includes the idle event-loop ticks between requests; the figure under
  load is the marginal cost.
- req/s per core: against the fast echo upstream, 16 concurrent clients; requests divided by the
  CPU seconds the server process used (so the figure is about the server, not the shared box);
  also the wall-clock req/s.
- RSS: VmRSS / VmHWM of the server process after the load.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.wrapper._wrapper_servers import FaultUpstream, Proc, Wrapper, free_port  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
MSG = [{"role": "user", "content": "Tell me a story about a cat."}]


def cpu_seconds(pid: int) -> float:
    """utime+stime of ``pid`` and its threads (all of one process), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_mb(pid: int) -> tuple[float, float]:
    vals = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            k, v = line.split(":")
            vals[k] = int(v.split()[0]) / 1024
    return vals["VmRSS"], vals["VmHWM"]


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


class Target:
    def __init__(self, name: str, base: str, pid: int, key: str | None = None) -> None:
        self.name, self.base, self.pid = name, base, pid
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}


async def one(session: aiohttp.ClientSession, t: Target, body: dict) -> float:
    t0 = time.perf_counter()
    async with session.post(t.base + "/chat/completions", json=body, headers=t.headers) as r:
        await r.read()
        assert r.status == 200, (t.name, r.status)
    return time.perf_counter() - t0


async def one_stream(session: aiohttp.ClientSession, t: Target, body: dict) -> tuple[float, float, int]:
    """(time to first generated text, total time, data events)."""
    t0 = time.perf_counter()
    ttft = None
    events = 0
    buf = b""
    async with session.post(t.base + "/chat/completions", json=body, headers=t.headers) as r:
        assert r.status == 200, (t.name, r.status)
        async for chunk in r.content.iter_any():
            buf += chunk
            *done, buf = buf.split(b"\n\n")
            for ev in done:
                events += 1
                if ttft is None and b'"content":"' in ev and b'"content":""' not in ev:
                    ttft = time.perf_counter() - t0
    total = time.perf_counter() - t0
    return (ttft if ttft is not None else total), total, events


async def latency(targets: list[Target], n: int, body: dict, stream: bool = False) -> dict[str, list]:
    out: dict[str, list] = {t.name: [] for t in targets}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        for t in targets:  # warm-up
            for _ in range(5):
                await (one_stream(s, t, body) if stream else one(s, t, body))
        for _ in range(n):
            for t in targets:
                out[t.name].append(await (one_stream(s, t, body) if stream else one(s, t, body)))
    return out


async def load(t: Target, n: int, concurrency: int, body: dict) -> tuple[float, float]:
    """(wall req/s, server CPU seconds)."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        for _ in range(20):
            await one(s, t, body)
        left = n
        c0, w0 = cpu_seconds(t.pid), time.perf_counter()

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await one(s, t, body)

        await asyncio.gather(*[worker() for _ in range(concurrency)])
        return n / (time.perf_counter() - w0), cpu_seconds(t.pid) - c0


def fmt(v: float | None, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vllm-url", help="use a running vLLM (base URL ending in /v1) instead of starting one")
    ap.add_argument("--vllm-key")
    ap.add_argument("--vllm-pid", type=int, help="its API server pid, for the CPU column")
    ap.add_argument("--quick", action="store_true", help="fewer requests (a rough look)")
    a = ap.parse_args()
    n_lat, n_stream, n_load = (60, 20, 1000) if a.quick else (300, 60, 4000)

    procs: list[Proc] = []
    vllm = None
    load0 = os.getloadavg()
    try:
        if a.vllm_url:
            vbase, vkey, vpid = a.vllm_url.rstrip("/"), a.vllm_key, a.vllm_pid
        else:
            from tests.support.real_vllm import VllmServer

            print("starting a real vLLM (tiny fast model)...", flush=True)
            vllm = VllmServer("fast").start()
            vbase, vkey, vpid = vllm.base_url, vllm.api_key, vllm.pid
        echo = FaultUpstream()
        procs.append(echo)

        def trio(base: str, key: str | None, upstream_pid: int | None, label: str) -> list[Target]:
            w = Wrapper(base, api_key=key)
            port = free_port()
            cmd = [sys.executable, str(REPO / "benchmarks" / "_passthrough.py"), "--port", str(port),
                   "--upstream", base] + (["--api-key", key] if key else [])
            p = Proc(cmd, port)
            procs.extend([w, p])
            return [Target(f"direct {label}", base, upstream_pid or 0, key),
                    Target("wrapper", w.base_url, w.pid), Target("fastapi+httpx", p.url + "/v1", p.pid)]

        vt = trio(vbase, vkey, vpid, "vLLM")
        et = trio(echo.base_url, None, echo.pid, "echo")

        body = {"model": "tiny", "messages": MSG, "max_tokens": 16, "temperature": 0, "ignore_eos": True}
        sbody = {**body, "stream": True}
        lbody = {**sbody, "max_tokens": 256}
        ebody = {"messages": [{"role": "user", "content": "hello " * 10}], "max_tokens": 16}

        print(f"latency: {n_lat} sequential requests per target, interleaved...", flush=True)
        cpu0 = {t.name: cpu_seconds(t.pid) if t.pid else None for t in vt}
        lat = asyncio.run(latency(vt, n_lat, body))
        cpu_req = {t.name: (cpu_seconds(t.pid) - cpu0[t.name]) / (n_lat + 5) * 1000 if t.pid else None for t in vt}
        print(f"streams: {n_stream} per target (16 and 256 tokens)...", flush=True)
        st = asyncio.run(latency(vt, n_stream, sbody, stream=True))
        cpu0 = {t.name: cpu_seconds(t.pid) if t.pid else None for t in vt}
        n_long = max(10, n_stream // 3)
        lst = asyncio.run(latency(vt, n_long, lbody, stream=True))
        # (+5 warm-up streams per target, as long as the measured ones)
        cpu_chunk = {t.name: (cpu_seconds(t.pid) - cpu0[t.name]) * 1e6
                     / (sum(x[2] for x in lst[t.name]) * (n_long + 5) / n_long)
                     if t.pid else None for t in vt}
        print("echo upstream: sequential latency, then load...", flush=True)
        elat = asyncio.run(latency(et, n_lat, ebody))
        loads = {t.name: asyncio.run(load(t, n_load, 16, ebody)) for t in et}
        rss = {t.name: rss_mb(t.pid) for t in et}

        d, w_, p_ = (t.name for t in vt)
        ed, ew, ep = (t.name for t in et)
        rows = []

        def row(label: str, vals: list[str]) -> None:
            rows.append((label, *vals))

        def p50(xs, i=None):
            return statistics.median([x[i] for x in xs] if i is not None else xs) * 1000

        row("vLLM: p50 latency, ms (16 tok)", [fmt(p50(lat[k])) for k in (d, w_, p_)])
        row("vLLM: p99 latency, ms", [fmt(pct(lat[k], 99) * 1000) for k in (d, w_, p_)])
        row("vLLM: added p50 latency, ms", ["0"] + [fmt(p50(lat[k]) - p50(lat[d]), "+.2f") for k in (w_, p_)])
        row("vLLM: TTFT p50, ms", [fmt(p50(st[k], 0)) for k in (d, w_, p_)])
        row("vLLM: added TTFT p50, ms", ["0"] + [fmt(p50(st[k], 0) - p50(st[d], 0), "+.2f") for k in (w_, p_)])
        chunks = statistics.median([x[2] for x in lst[d]])
        row("vLLM: stream 256 tok total p50, ms", [fmt(p50(lst[k], 1)) for k in (d, w_, p_)])
        row("vLLM: added per chunk, us", ["0"] + [fmt((p50(lst[k], 1) - p50(lst[d], 1)) / chunks * 1e3, "+.1f")
                                                 for k in (w_, p_)])
        row("vLLM: CPU us per streamed chunk", [fmt(cpu_chunk[k], ".0f") for k in (d, w_, p_)])
        row("vLLM: CPU ms/request, sequential", [fmt(cpu_req[k]) for k in (d, w_, p_)])
        row("echo: p50 latency, ms", [fmt(p50(elat[k])) for k in (ed, ew, ep)])
        row("echo: added p50 latency, ms", ["0"] + [fmt(p50(elat[k]) - p50(elat[ed]), "+.2f") for k in (ew, ep)])
        row("echo: CPU ms/request under load", [fmt(loads[k][1] / n_load * 1000, ".3f") for k in (ed, ew, ep)])
        row("echo: req/s per core (server CPU)", [fmt(n_load / loads[k][1], ".0f") for k in (ed, ew, ep)])
        row("echo: wall req/s, 16 clients", [fmt(loads[k][0], ".0f") for k in (ed, ew, ep)])
        row("RSS after load, MB (peak)", [f"{rss[k][0]:.0f} ({rss[k][1]:.0f})" for k in (ed, ew, ep)])

        head = ("", "direct", "wrapper", "fastapi+httpx")
        widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(4)]
        print()
        print(f"machine: {os.cpu_count()} cores; Python {sys.version.split()[0]}; load average at start "
              f"{load0[0]:.1f}, at end {os.getloadavg()[0]:.1f} (other processes share these cores)")
        print("direct = vLLM itself (rows 'vLLM') or the fast echo upstream (rows 'echo')")
        for r in [head, *rows]:
            print("  ".join(str(c).ljust(widths[i]) if i == 0 else str(c).rjust(widths[i]) for i, c in enumerate(r)))
    finally:
        for p in reversed(procs):
            p.stop()
        if vllm is not None:
            vllm.stop()


if __name__ == "__main__":
    main()
