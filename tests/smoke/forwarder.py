"""A tiny TCP forwarder: the stand-in for what `kubectl port-forward` and a waking backend do.

As a module: `Forwarder(listen_port, target_port, delay=0)` forwards 127.0.0.1:listen_port to
127.0.0.1:target_port in threads; with `delay` it starts listening only after that many
seconds (a backend that is still scaled to zero or loading refuses connections).

As a script it is the stand-in `kubectl` the smoke tests put first on PATH: it records its
arguments (JSON, one line per run, in $SMOKE_KUBECTL_LOG), reads LOCAL:REMOTE from them,
listens on 127.0.0.1:LOCAL, forwards to the running wrapper ($SMOKE_FORWARD_TO, a port),
prints kubectl's "Forwarding from" line, and on SIGTERM records that it was stopped. When
nothing listens on the target port it does what kubectl >= 1.23 does when the pod refuses
(kubernetes/kubernetes#103526; client-go tools/portforward): logs "an error occurred
forwarding L -> R: ... connection refused", closes that connection, and exits 1 with
"error: lost connection to pod".
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class Forwarder:
    def __init__(self, listen_port: int, target_port: int, delay: float = 0.0,
                 on_refused: Callable[[OSError], None] | None = None) -> None:
        self.listen_port, self.target_port = listen_port, target_port
        self.on_refused = on_refused
        self.opened_at: float | None = None
        self._server: socket.socket | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(delay,), daemon=True)

    def start(self) -> Forwarder:
        self._thread.start()
        return self

    def _serve(self, delay: float) -> None:
        if self._stop.wait(delay):
            return
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.listen_port))
        server.listen(64)
        server.settimeout(0.2)
        self._server, self.opened_at = server, time.monotonic()
        while not self._stop.is_set():
            try:
                client, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError as error:
                if self.on_refused is not None:
                    self.on_refused(error)  # before the client sees the connection close
                client.close()
                continue
            threading.Thread(target=_pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=_pipe, args=(upstream, client), daemon=True).start()
        server.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def _kubectl(argv: list[str]) -> int:
    log = os.environ["SMOKE_KUBECTL_LOG"]
    with open(log, "a") as out:
        out.write(json.dumps({"event": "start", "argv": argv, "pid": os.getpid()}) + "\n")
    if "port-forward" not in argv:
        print(f"stand-in kubectl: only port-forward, got {argv}", file=sys.stderr)
        return 1
    ports = next(a for a in argv if ":" in a and a.split(":")[0].isdigit())
    local, remote = int(ports.split(":")[0]), ports.split(":")[1]
    stopped, lost = threading.Event(), threading.Event()

    def on_refused(error: OSError) -> None:
        print(f"E1201 00:00:00.000000 4242 portforward.go:413] an error occurred forwarding {local} -> {remote}: "
              f"error forwarding port {remote} to pod 0123abcd, uid : failed to connect to localhost:{remote} "
              f"inside namespace: {error}", file=sys.stderr, flush=True)
        lost.set()
        stopped.set()

    forwarder = Forwarder(local, int(os.environ["SMOKE_FORWARD_TO"]), on_refused=on_refused).start()

    def on_term(signum: int, frame: object) -> None:
        stopped.set()

    signal.signal(signal.SIGTERM, on_term)
    while forwarder.opened_at is None:
        time.sleep(0.01)
    print(f"Forwarding from 127.0.0.1:{local} -> {remote}", flush=True)
    stopped.wait()
    forwarder.stop()
    if lost.is_set():
        print("error: lost connection to pod", file=sys.stderr, flush=True)
        with open(log, "a") as out:
            out.write(json.dumps({"event": "lost", "pid": os.getpid()}) + "\n")
        return 1
    with open(log, "a") as out:
        out.write(json.dumps({"event": "stopped", "pid": os.getpid()}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(_kubectl(sys.argv[1:]))
