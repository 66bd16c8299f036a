"""Benchmark: what each server design costs per request before any proxying (issue 21's CPU target).

    .venv/bin/python benchmarks/server_floor_bench.py [--spaced N] [--burst N] [--gap-ms MS]

Each server answers a small POST with one fixed JSON body (benchmarks/_floor_servers.py):
nginx (``return 200``, the C floor), a bare uvloop + httptools protocol with a task per request
(the floor of a Python server that awaits an upstream), uvicorn with a bare ASGI app, and the
same app behind the wrapper's own server (``wrapper.server``). One keep-alive connection each,
one run, the servers measured in turn, twice. Two phases: requests spaced ``--gap-ms`` apart
(as requests in front of a model server are: each pays the event loop's wake-up) and back to
back. CPU: utime+stime of the server process over the phase (/proc/<pid>/stat) per request.
Not a test: it prints figures.

Why: wrapper_bench.py measures the whole wrapper at 3.7-5.4x nginx's CPU per request in front of
vLLM, against a 2.5x target. This script shows how much of that is the server design alone.
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._floor_servers import BODY  # noqa: E402
from benchmarks._nginx import NginxFixedAnswer  # noqa: E402
from benchmarks.wrapper_bench import cpu_seconds  # noqa: E402
from tests.support.ports import free_port  # noqa: E402
from tests.support.processes import ServerProcess  # noqa: E402

PAYLOAD = b'{"model":"m","messages":[{"role":"user","content":"Tell me a story about a cat."}]}'
REQUEST = (
    b"POST /v1/chat/completions HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\n"
    b"content-length: %d\r\n\r\n%s" % (len(PAYLOAD), PAYLOAD)
)
WARMUP = 300


class Connection:
    """One keep-alive connection, one request at a time, the answer read to its last byte."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def request(self) -> None:
        self.sock.sendall(REQUEST)
        data = b""
        while b"\r\n\r\n" not in data:
            data += self.sock.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
        )
        while len(body) < length:
            body += self.sock.recv(65536)
        assert body == BODY, body[:200]

    def close(self) -> None:
        self.sock.close()


def cpu_per_request(server: ServerProcess, n: int, gap: float) -> float:
    """CPU milliseconds of the server process per request, over ``n`` requests ``gap`` s apart."""
    conn = Connection(server.port)
    try:
        for _ in range(WARMUP):
            conn.request()
        before = cpu_seconds(server.pid)
        for _ in range(n):
            conn.request()
            if gap:
                time.sleep(gap)
        return (cpu_seconds(server.pid) - before) * 1000 / n
    finally:
        conn.close()


def python_server(kind: str) -> ServerProcess:
    port = free_port()
    return ServerProcess(
        [sys.executable, str(REPO / "benchmarks" / "_floor_servers.py"), kind, str(port)], port, ready="/"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # /proc counts CPU in 10 ms ticks: enough requests per phase that a tick is ~1% of the figure
    parser.add_argument("--spaced", type=int, default=1500, help="spaced requests per server and round (default 1500)")
    parser.add_argument("--burst", type=int, default=10000, help="back-to-back requests per server and round (10000)")
    parser.add_argument("--gap-ms", type=float, default=5.0, help="pause between spaced requests (default 5)")
    args = parser.parse_args()
    names = ["nginx", "protocol", "uvicorn", "guarded"]
    labels = {
        "nginx": "nginx, return 200 (C)",
        "protocol": "uvloop + httptools, a task per request",
        "uvicorn": "uvicorn, bare ASGI app",
        "guarded": "the wrapper's server, bare ASGI app",
    }
    spaced: dict[str, list[float]] = {k: [] for k in names}
    burst: dict[str, list[float]] = {k: [] for k in names}
    with tempfile.TemporaryDirectory(prefix="floor-bench-") as tmp:
        for round_ in range(2):
            for name in names:
                server = (
                    NginxFixedAnswer(BODY.decode(), Path(tmp) / f"nginx{round_}")
                    if name == "nginx"
                    else python_server(name)
                )
                try:
                    spaced[name].append(cpu_per_request(server, args.spaced, args.gap_ms / 1000))
                    burst[name].append(cpu_per_request(server, args.burst, 0))
                finally:
                    server.stop()
    floor = min(spaced["nginx"])
    print("CPU ms per request, each server answering a fixed body (2 rounds; min; ratio to nginx's)\n")
    print(
        f"{'server':44s} {'spaced ' + format(args.gap_ms, 'g') + ' ms':>16s} {'ratio':>7s} {'back to back':>14s} {'ratio':>7s}"
    )
    for name in names:
        s, b = min(spaced[name]), min(burst[name])
        print(f"{labels[name]:44s} {s:16.3f} {s / floor:6.1f}x {b:14.3f} {b / min(burst['nginx']):6.1f}x")
    print(
        "\nThe wrapper's CPU target is 2.5x nginx's per proxied request; a server whose own cycle costs"
        " more than that before any proxying cannot meet it."
    )


if __name__ == "__main__":
    main()
