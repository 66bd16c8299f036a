"""Benchmark: the wrapper vs vLLM directly, nginx, and a plain FastAPI + httpx pass-through.

    .venv/bin/python benchmarks/wrapper_bench.py [--quick] [--profile DIR] [--vllm-url URL --vllm-key KEY]
    .venv/bin/python benchmarks/wrapper_bench.py --routing-cost [--rounds N] [--profile DIR]
    .venv/bin/python benchmarks/wrapper_bench.py --floor [--rounds N] [--requests N]
    make bench            # installs nginx first (.ci/install-nginx), then runs this

Everything comes from one run on this machine: it starts a real vLLM (tests/support/real_vllm.py,
tiny fast model; or uses --vllm-url), two fast echo upstreams (tests/wrapper/upstream_faults.py),
and in front of each upstream nginx (benchmarks/_nginx.py: Debian's, a plain reverse proxy with
keep-alive and no buffering, logging each request as the wrapper does: the C floor for one more
hop), the wrapper (``python -m wrapper``) and the baseline (benchmarks/_passthrough.py), each as
its own process on 127.0.0.1; plus one
wrapper routing over both echo upstreams (``VLLM_BASE_URL=a,b``, prefix policy). It prints a
side-by-side table, then each figure as a ratio to nginx's, and the issue-21 targets. Not a
test: it prints figures. Every file (configs, logs, vLLM's temp files) lives in one temp dir,
removed at the end.

- Latency: sequential non-streamed chat completions (16 tokens), requests interleaved
  round-robin across the targets so drift hits all alike; p50/p99. "added" is the median of
  the paired differences (request i via X minus request i direct, sent back to back).
- TTFT: streamed chat completions, time to the first chunk carrying generated text; "added"
  paired the same way.
- Per-chunk overhead: (streamed total via X - direct) / chunks, for 256-token streams.
- CPU: the time the server process ran on a core over a phase (the scheduler's own nanosecond
  count, ``/proc/<pid>/task/*/schedstat``; utime+stime in 10 ms ticks where that is missing),
  divided by its requests or streamed chunks (direct column: the upstream's own process). The
  sequential figure includes the idle event-loop wake-ups between requests; the figure under
  load is the marginal cost.
- req/s per core: against the fast echo upstream, 16 concurrent clients; requests divided by the
  CPU seconds the server process used (so the figure is about the server, not the shared box);
  also the wall-clock req/s. The load phase runs ``--load-rounds`` times, the targets in a
  different order each round, and each figure is the median of its rounds: on a shared box one
  phase's figure moves by a third from one phase to the next (nginx's too).
- RSS: VmRSS / VmHWM of the server process after the load.
- Placement: on two cores or more the servers under test (nginx, the wrapper, the pass-through,
  the floor servers) share the last core, and this load generator, the upstreams and vLLM the
  others (``--no-pin`` leaves it to the scheduler). A server then never shares a core's caches
  with its client, and every server is driven at about the client's rate, so none is measured
  at a batching advantage; unpinned, nginx's figure moved between 15 and 32 us per request from
  one load phase to the next.
- ``--routing-cost``: only the echo rows "wrapper" and "wrapper 2 up" (no vLLM, no nginx), paired:
  N rounds, each a load phase through both (the order alternating round by round), so both
  see the same box; prints each round and the medians of CPU ms/request and req/s (issue 14:
  routing over several replicas must cost no more per request than one backend).
- ``--floor``: only nginx, the least a Python proxy of the wrapper's design costs
  (``benchmarks/_floor_servers.py proxy``: uvloop, httptools, a task per request, the wrapper's HTTP/1.1
  client, nothing else) and the wrapper, in front of one echo upstream, N rounds in a rotating
  order: CPU per request of each and as a ratio to nginx's (what is Python, what is the wrapper).
- ``--profile DIR``: py-spy samples each wrapper process for the whole run (it perturbs the
  figures: profile and measure in separate runs); DIR gets the collapsed stacks and the top
  entries are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._nginx import Nginx  # noqa: E402
from tests.wrapper._wrapper_servers import FaultUpstream, Proc, Wrapper, free_port  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
MSG = [{"role": "user", "content": "Tell me a story about a cat."}]
# Issue 21's targets, each as a bound on the wrapper's figure relative to nginx's.
ADDED_RATIO = 1.25  # added p50 latency and added TTFT ...
NOISE_FLOOR_MS = 1.0  # ... or at most this much where nginx's is within noise of zero
CPU_RATIO = 2.5
MIN_RPS_PER_CORE = 4000
MAX_RSS_MB = 100


def cpu_seconds(pid: int) -> float:
    """The time ``pid``'s threads ran on a core, in seconds (nanosecond resolution where the
    kernel keeps schedstat; else utime+stime, in ticks of 1/SC_CLK_TCK s)."""
    try:
        return sum(int((t / "schedstat").read_text().split()[0]) for t in Path(f"/proc/{pid}/task").iterdir()) / 1e9
    except (OSError, ValueError, IndexError):  # a thread that just ended, or no schedstat
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK


def isolate_servers(enabled: bool) -> int | None:
    """With ``enabled`` and two cores or more: this process (the load generator) and everything
    it starts from now on (the upstreams, vLLM) leave the last core, which :func:`pin` gives to
    the servers under test. Returns that core, or None (nothing pinned). Why: "Placement", in
    this module's docstring."""
    cores = sorted(os.sched_getaffinity(0))
    if not enabled or len(cores) < 2:
        return None
    os.sched_setaffinity(0, cores[:-1])
    return cores[-1]


def pin(pid: int, core: int | None) -> None:
    """Every thread of ``pid`` onto ``core`` (threads it starts later inherit it)."""
    if core is not None:
        for task in Path(f"/proc/{pid}/task").iterdir():
            os.sched_setaffinity(int(task.name), {core})


def placement(core: int | None) -> str:
    if core is None:
        return "not pinned (--no-pin, or one core)"
    return f"servers under test pinned to core {core}; load generator and upstreams on the others"


def rss_mb(pid: int) -> tuple[float, float]:
    vals = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            k, v = line.split(":")
            vals[k] = int(v.split()[0]) / 1024
    return vals["VmRSS"], vals["VmHWM"]


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


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


def paired_added(xs: list, base: list, i: int | None = None) -> float:
    """Median of the paired differences (ms): request r via the target minus request r direct."""
    if i is not None:
        xs, base = [x[i] for x in xs], [x[i] for x in base]
    return statistics.median(a - b for a, b in zip(xs, base, strict=True)) * 1000


def noise_ms(xs: list, base: list, i: int | None = None) -> float:
    """Half the interquartile range of the paired differences (ms): what "within noise" means."""
    if i is not None:
        xs, base = [x[i] for x in xs], [x[i] for x in base]
    d = sorted((a - b) * 1000 for a, b in zip(xs, base, strict=True))
    return (pct(d, 75) - pct(d, 25)) / 2


class Profiler:
    """py-spy sampling one process into a collapsed-stack file (``--format raw``)."""

    def __init__(self, pid: int, out: Path) -> None:
        self.out = out
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid), "--format", "raw",
             "--rate", "250", "--nonblocking", "-o", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def profile_top(path: Path, n: int = 15) -> list[str]:
    """The functions with the most samples: inclusive (on the stack) and self (at the top).

    Samples whose innermost Python frame is the event loop's ``run`` are C (uvloop, httptools,
    the kernel) or waiting for a core on a busy box: counted apart, the shares are of the rest.
    """
    incl: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = in_loop = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        k = int(count)
        frames = [f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].rsplit("/", 1)[-1] + ")"
                  if " (" in f else f for f in stack.split(";")]
        if frames[-1].startswith("Runner.run "):
            in_loop += k
            continue
        total += k
        for f in set(frames):
            incl[f] += k
        own[frames[-1]] += k
    out = [f"  {in_loop} samples in the event loop's C code (or waiting for a core); of the other {total}, "
           "inclusive (on the stack) / self (running):"]
    skip = ("_run_module_as_main", "_run_code", "<module>", "main (", "run (", "asyncio_run", "Runner.run",
            "Server.run")
    selfs = own.most_common(n)
    tops = [(f, k) for f, k in incl.most_common(n + len(skip)) if not f.startswith(skip)][:n]
    for i, (f, k) in enumerate(tops):
        sf, sk = selfs[i] if i < len(selfs) else ("", 0)
        out.append(f"  {100 * k / max(total, 1):5.1f}%  {f[:58]:<58}  {100 * sk / max(total, 1):5.1f}%  {sf[:58]}")
    return out


ECHO_BODY = {"messages": [{"role": "user", "content": "hello " * 10}], "max_tokens": 16}


def paired_rounds(targets: list[Target], rounds: int, n: int) -> dict[str, list[tuple[float, float]]]:
    """``rounds`` load phases of ``n`` requests through each target, the order rotating round by
    round so that drift on the box hits all alike: (CPU ms/request, wall req/s) per round."""
    figures: dict[str, list[tuple[float, float]]] = {t.name: [] for t in targets}
    for r in range(rounds):
        line = []
        for t in targets[r % len(targets) :] + targets[: r % len(targets)]:
            rps, cpu = asyncio.run(load(t, n, 16, ECHO_BODY))
            figures[t.name].append((cpu / n * 1000, rps))
            line.append(f"{t.name} {cpu / n * 1000:.4f} ms, {rps:.0f} req/s")
        print(f"  round {r + 1}: " + "; ".join(line), flush=True)
    return figures


def print_rounds(
    figures: dict[str, list[tuple[float, float]]], rounds: int, n: int, load0: tuple, core: int | None
) -> None:
    print(f"machine: {os.cpu_count()} cores; load average at start {load0[0]:.1f}, at end {os.getloadavg()[0]:.1f}")
    print(placement(core))
    print(f"medians of {rounds} rounds of {n} requests, 16 clients:")
    first = next(iter(figures))
    base = statistics.median(x[0] for x in figures[first])
    rows = [("", "CPU ms/request", f"/ {first}'s", "req/s per core", "wall req/s")]
    for name, xs in figures.items():
        cpu = statistics.median(x[0] for x in xs)
        rows.append(
            (name, f"{cpu:.4f}", f"{cpu / base:.2f}x", f"{1000 / cpu:.0f}", f"{statistics.median(x[1] for x in xs):.0f}")
        )
    table(rows)


def routing_cost(rounds: int, n: int, profile: Path | None, pinned: bool) -> None:
    """The single-backend wrapper and the routed one (prefix, two echo upstreams), paired."""
    core = isolate_servers(pinned)
    procs: list[Proc] = []
    profilers: list[tuple[str, Profiler]] = []
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="wrapper-bench-") as tmp:
        tempfile.tempdir = tmp
        try:
            echo, echo2 = FaultUpstream(), FaultUpstream()
            procs += [echo, echo2]
            single = Wrapper(echo.base_url)
            routed = Wrapper(f"{echo.base_url},{echo2.base_url}", routing="prefix")
            procs += [single, routed]
            targets = [
                Target("wrapper", single.base_url, single.pid),
                Target("wrapper 2 up", routed.base_url, routed.pid),
            ]
            for t in targets:
                pin(t.pid, core)
            if profile:
                profile.mkdir(parents=True, exist_ok=True)
                profilers = [(t.name, Profiler(t.pid, profile / f"{t.name.replace(' ', '-')}.txt")) for t in targets]
            figures = paired_rounds(targets, rounds, n)
        finally:
            for _, prof in profilers:
                prof.stop()
            for p in reversed(procs):
                p.stop()
            tempfile.tempdir = None
    print_rounds(figures, rounds, n, load0, core)
    ratios = [a[0] / b[0] for a, b in zip(figures["wrapper 2 up"], figures["wrapper"], strict=True)]
    print(f"  routed / single CPU per request, median of the paired ratios: {statistics.median(ratios):.3f}")
    for label, prof in profilers:
        print(f"profile, {label}: {prof.out}")
        if prof.out.exists():
            print("\n".join(profile_top(prof.out)))


def floor_cost(rounds: int, n: int, pinned: bool) -> None:
    """nginx, the least a Python proxy costs (``_floor_servers.py proxy``) and the wrapper, in
    front of one echo upstream, in rotating rounds: how much of the wrapper's CPU per request
    is Python itself and how much is the wrapper's own work."""
    core = isolate_servers(pinned)
    procs: list[Proc] = []
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="wrapper-bench-") as tmp:
        tempfile.tempdir = tmp
        try:
            echo = FaultUpstream()
            procs.append(echo)
            ng = Nginx(echo.base_url, Path(tmp) / "nginx")
            procs.append(ng)
            floors = []
            for kind in ("relay", "proxy"):
                port = free_port()
                cmd = [sys.executable, str(REPO / "benchmarks" / "_floor_servers.py"), kind, str(port), echo.base_url]
                floors.append(Proc(cmd, port))
                procs.append(floors[-1])
            w = Wrapper(echo.base_url)
            procs.append(w)
            targets = [
                Target("nginx", ng.base_url, ng.pid),
                Target("python, no task", floors[0].url + "/v1", floors[0].pid),
                Target("python floor", floors[1].url + "/v1", floors[1].pid),
                Target("wrapper", w.base_url, w.pid),
            ]
            for t in targets:
                pin(t.pid, core)
            figures = paired_rounds(targets, rounds, n)
        finally:
            for p in reversed(procs):
                p.stop()
            tempfile.tempdir = None
    print_rounds(figures, rounds, n, load0, core)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vllm-url", help="use a running vLLM (base URL ending in /v1) instead of starting one")
    ap.add_argument("--vllm-key")
    ap.add_argument("--vllm-pid", type=int, help="its API server pid, for the CPU column")
    ap.add_argument("--quick", action="store_true", help="fewer requests (a rough look)")
    ap.add_argument("--profile", type=Path, help="py-spy each wrapper process; collapsed stacks into this dir")
    ap.add_argument("--routing-cost", action="store_true",
                    help="only the single-backend vs routed wrapper in front of echo upstreams, paired")
    ap.add_argument("--rounds", type=int, default=5, help="--routing-cost, --floor: rounds")
    ap.add_argument("--load-rounds", type=int, default=3, help="rounds of the echo load phase (medians)")
    ap.add_argument(
        "--floor",
        action="store_true",
        help="only nginx, the least a Python proxy costs and the wrapper in front of an echo upstream, in rounds",
    )
    ap.add_argument("--requests", type=int, default=3000, help="--routing-cost, --floor: requests per target per round")
    ap.add_argument(
        "--no-pin",
        action="store_true",
        help="leave placement to the scheduler (default on 2+ cores: servers on the last core, the rest elsewhere)",
    )
    a = ap.parse_args()
    if a.routing_cost:
        routing_cost(a.rounds, a.requests, a.profile, not a.no_pin)
        return
    if a.floor:
        floor_cost(a.rounds, a.requests, not a.no_pin)
        return
    n_lat, n_stream, n_load = (60, 20, 1000) if a.quick else (300, 60, 4000)

    core = isolate_servers(not a.no_pin)  # before vLLM and the upstreams start: they inherit it
    procs: list[Proc] = []
    profilers: list[tuple[str, Profiler]] = []
    vllm = None
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="wrapper-bench-") as tmp:
        tempfile.tempdir = tmp  # server logs and vLLM's work dir go here too
        try:
            if a.vllm_url:
                vbase, vkey, vpid = a.vllm_url.rstrip("/"), a.vllm_key, a.vllm_pid
            else:
                from tests.support.real_vllm import VllmServer

                print("starting a real vLLM (tiny fast model)...", flush=True)
                vllm = VllmServer("fast").start()
                vbase, vkey, vpid = vllm.base_url, vllm.api_key, vllm.pid
            echo, echo2 = FaultUpstream(), FaultUpstream()
            procs += [echo, echo2]

            def proxies(base: str, key: str | None, upstream_pid: int | None, label: str) -> list[Target]:
                ng = Nginx(base, Path(tmp) / f"nginx-{label}", api_key=key)
                w = Wrapper(base, api_key=key)
                port = free_port()
                cmd = [sys.executable, str(REPO / "benchmarks" / "_passthrough.py"), "--port", str(port),
                       "--upstream", base] + (["--api-key", key] if key else [])
                p = Proc(cmd, port)
                procs.extend([ng, w, p])
                if a.profile:
                    a.profile.mkdir(parents=True, exist_ok=True)
                    profilers.append((f"wrapper ({label})", Profiler(w.pid, a.profile / f"wrapper-{label}.txt")))
                return [Target(f"direct {label}", base, upstream_pid or 0, key), Target("nginx", ng.base_url, ng.pid),
                        Target("wrapper", w.base_url, w.pid), Target("fastapi+httpx", p.url + "/v1", p.pid)]

            vt = proxies(vbase, vkey, vpid, "vLLM")
            et = proxies(echo.base_url, None, echo.pid, "echo")
            routed = Wrapper(f"{echo.base_url},{echo2.base_url}", routing="prefix")
            procs.append(routed)
            et.insert(3, Target("wrapper 2 up", routed.base_url, routed.pid))
            if a.profile:
                profilers.append(("wrapper (2 echo)", Profiler(routed.pid, a.profile / "wrapper-routed.txt")))
            for t in [*vt[1:], *et[1:]]:  # the proxies; "direct" is the upstream itself
                pin(t.pid, core)

            body = {"model": "tiny", "messages": MSG, "max_tokens": 16, "temperature": 0, "ignore_eos": True}
            sbody = {**body, "stream": True}
            lbody = {**sbody, "max_tokens": 256}
            ebody = ECHO_BODY
            esbody = {**ebody, "stream": True}

            print(f"latency: {n_lat} sequential requests per target, interleaved...", flush=True)
            cpu0 = {t.name: cpu_seconds(t.pid) if t.pid else None for t in vt}
            lat = asyncio.run(latency(vt, n_lat, body))
            cpu_req = {t.name: (cpu_seconds(t.pid) - cpu0[t.name]) / (n_lat + 5) * 1000 if t.pid else None
                       for t in vt}
            print(f"streams: {n_stream} per target (16 and 256 tokens)...", flush=True)
            st = asyncio.run(latency(vt, n_stream, sbody, stream=True))
            cpu0 = {t.name: cpu_seconds(t.pid) if t.pid else None for t in vt}
            n_long = max(10, n_stream // 3)
            lst = asyncio.run(latency(vt, n_long, lbody, stream=True))
            # (+5 warm-up streams per target, as long as the measured ones)
            cpu_chunk = {t.name: (cpu_seconds(t.pid) - cpu0[t.name]) * 1e6
                         / (sum(x[2] for x in lst[t.name]) * (n_long + 5) / n_long)
                         if t.pid else None for t in vt}
            print(f"echo upstream: sequential latency and streams, then {a.load_rounds} rounds of load...", flush=True)
            elat = asyncio.run(latency(et, n_lat, ebody))
            est = asyncio.run(latency(et, n_lat, esbody, stream=True))
            rounds = paired_rounds(et, a.load_rounds, n_load)  # (CPU ms/request, wall req/s) per round
            loads = {k: (statistics.median(x[1] for x in xs), statistics.median(x[0] for x in xs) * n_load / 1000)
                     for k, xs in rounds.items()}  # (wall req/s, CPU seconds), medians
            rss = {t.name: rss_mb(t.pid) for t in et}
        finally:
            for _, prof in profilers:
                prof.stop()
            for p in reversed(procs):
                p.stop()
            if vllm is not None:
                vllm.stop()
            tempfile.tempdir = None

    vnames = [t.name for t in vt]
    enames = [t.name for t in et]
    d, ed = vnames[0], enames[0]
    cols = ["direct", "nginx", "wrapper", "wrapper 2 up", "fastapi+httpx"]

    def v(values: dict[str, str]) -> list[str]:  # vLLM rows: no routed column
        return [values.get(n, "-") for n in (vnames[0], vnames[1], vnames[2], "", vnames[3])]

    def e(values: dict[str, str]) -> list[str]:
        return [values.get(n, "-") for n in enames]

    def p50(xs, i=None):
        return statistics.median([x[i] for x in xs] if i is not None else xs) * 1000

    fig: dict[str, dict[str, float]] = {}  # figure -> target -> value, for the ratio table
    fig["vLLM added p50, ms"] = {k: paired_added(lat[k], lat[d]) for k in vnames[1:]}
    fig["vLLM added TTFT, ms"] = {k: paired_added(st[k], st[d], 0) for k in vnames[1:]}
    fig["vLLM CPU ms/request, seq."] = {k: cpu_req[k] for k in vnames[1:]}
    fig["echo added p50, ms"] = {k: paired_added(elat[k], elat[ed]) for k in enames[1:]}
    fig["echo added TTFT, ms"] = {k: paired_added(est[k], est[ed], 0) for k in enames[1:]}
    fig["echo CPU ms/request, load"] = {k: loads[k][1] / n_load * 1000 for k in enames[1:]}
    fig["echo req/s per core"] = {k: n_load / loads[k][1] for k in enames[1:]}
    fig["RSS after load, MB"] = {k: rss[k][0] for k in enames[1:]}
    noise = {
        "vLLM added p50, ms": noise_ms(lat["nginx"], lat[d]),
        "vLLM added TTFT, ms": noise_ms(st["nginx"], st[d], 0),
        "echo added p50, ms": noise_ms(elat["nginx"], elat[ed]),
        "echo added TTFT, ms": noise_ms(est["nginx"], est[ed], 0),
    }

    rows: list[tuple[str, ...]] = []

    def row(label: str, vals: list[str]) -> None:
        rows.append((label, *vals))

    def added(name: str, spec: str = "+.2f") -> dict[str, str]:
        return {k: fmt(x, spec) for k, x in fig[name].items()}

    row("vLLM: p50 latency, ms (16 tok)", v({k: fmt(p50(lat[k])) for k in vnames}))
    row("vLLM: p99 latency, ms", v({k: fmt(pct(lat[k], 99) * 1000) for k in vnames}))
    row("vLLM: added p50 latency, ms (paired)", v({d: "0", **added("vLLM added p50, ms")}))
    row("vLLM: TTFT p50, ms", v({k: fmt(p50(st[k], 0)) for k in vnames}))
    row("vLLM: added TTFT p50, ms (paired)", v({d: "0", **added("vLLM added TTFT, ms")}))
    chunks = statistics.median([x[2] for x in lst[d]])
    row("vLLM: stream 256 tok total p50, ms", v({k: fmt(p50(lst[k], 1)) for k in vnames}))
    row("vLLM: added per chunk, us", v({d: "0", **{k: fmt((p50(lst[k], 1) - p50(lst[d], 1)) / chunks * 1e3, "+.1f")
                                                  for k in vnames[1:]}}))
    row("vLLM: CPU us per streamed chunk", v({k: fmt(cpu_chunk[k], ".0f") for k in vnames}))
    row("vLLM: CPU ms/request, sequential", v({k: fmt(cpu_req[k]) for k in vnames}))
    row("echo: p50 latency, ms", e({k: fmt(p50(elat[k])) for k in enames}))
    row("echo: added p50 latency, ms (paired)", e({ed: "0", **added("echo added p50, ms")}))
    row("echo: TTFT p50, ms", e({k: fmt(p50(est[k], 0)) for k in enames}))
    row("echo: added TTFT p50, ms (paired)", e({ed: "0", **added("echo added TTFT, ms")}))
    row("echo: CPU ms/request under load", e({k: fmt(loads[k][1] / n_load * 1000, ".3f") for k in enames}))
    row("echo: req/s per core (server CPU)", e({k: fmt(n_load / loads[k][1], ".0f") for k in enames}))
    row("echo: wall req/s, 16 clients", e({k: fmt(loads[k][0], ".0f") for k in enames}))
    row("RSS after load, MB (peak)", e({k: f"{rss[k][0]:.0f} ({rss[k][1]:.0f})" for k in enames}))

    print()
    print(f"machine: {os.cpu_count()} cores; Python {sys.version.split()[0]}; load average at start "
          f"{load0[0]:.1f}, at end {os.getloadavg()[0]:.1f} (other processes share these cores)")
    print(placement(core))
    print("direct = vLLM itself (rows 'vLLM') or the fast echo upstream (rows 'echo'); "
          "wrapper 2 up = the wrapper routing over two echo upstreams (prefix policy)")
    table([("", *cols), *rows])

    print()
    print("as a ratio to nginx's figure (nginx's own value in its column):")
    rrows = []
    for name, vals in fig.items():
        ng = vals["nginx"]
        rrows.append((name, fmt(ng, ".3f"), *[fmt(vals[k] / ng, ".2f") + "x" if k in vals and ng else "-"
                                             for k in ("wrapper", "wrapper 2 up", "fastapi+httpx")]))
    table([("", "nginx", "wrapper", "wrapper 2 up", "fastapi+httpx"), *rrows])

    print()
    print("issue 21 targets (wrapper; wrapper 2 up):")
    for name in ("vLLM added p50, ms", "vLLM added TTFT, ms", "echo added p50, ms", "echo added TTFT, ms"):
        ng = fig[name]["nginx"]
        bound = NOISE_FLOOR_MS if abs(ng) <= noise[name] else max(ADDED_RATIO * ng, 0.0)
        why = (f"<= {NOISE_FLOOR_MS:g} ms, nginx's {ng:+.2f} is within noise (+-{noise[name]:.2f})"
               if abs(ng) <= noise[name] else f"<= {ADDED_RATIO}x nginx's {ng:+.2f}")
        verdict(name, fig[name], bound, why)
    for name in ("vLLM CPU ms/request, seq.", "echo CPU ms/request, load"):
        verdict(name, fig[name], CPU_RATIO * fig[name]["nginx"], f"<= {CPU_RATIO}x nginx's {fig[name]['nginx']:.3f}")
    verdict("echo req/s per core", fig["echo req/s per core"], MIN_RPS_PER_CORE, f">= {MIN_RPS_PER_CORE}",
            at_least=True)
    verdict("RSS after load, MB", fig["RSS after load, MB"], MAX_RSS_MB, f"<= {MAX_RSS_MB}")

    for label, prof in profilers:
        print()
        print(f"profile, {label}: {prof.out}")
        if prof.out.exists():
            print("\n".join(profile_top(prof.out)))
        else:
            print("  (no profile written: " + (prof.proc.stderr.read().decode(errors="replace")[-300:]
                                                  if prof.proc.stderr else "") + ")")


def verdict(name: str, vals: dict[str, float], bound: float, why: str, at_least: bool = False) -> None:
    got = [(k, vals[k]) for k in ("wrapper", "wrapper 2 up") if k in vals]
    ok = all((x >= bound) if at_least else (x <= bound) for _, x in got)
    shown = "; ".join(f"{x:.2f}" for _, x in got)
    print(f"  {'met    ' if ok else 'NOT met'}  {name}: {shown}  (target {why})")


def table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(str(c).ljust(widths[i]) if i == 0 else str(c).rjust(widths[i]) for i, c in enumerate(r)))


if __name__ == "__main__":
    main()
