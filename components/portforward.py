"""`kubectl port-forward` to a Service, on a free local port, for as long as a `with` block runs.

    with PortForward(namespace="vllm-dev", service="vllm-wrapper", port=8001) as forward:
        httpx.get(f"{forward.url}/health")

The forward is ready once its local port accepts connections; it is stopped (SIGTERM,
then SIGKILL) when the block ends, also on errors. kubectl's own messages are kept and
shown when it fails; nothing secret passes through its command line.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

Progress = Callable[[str], None]


class PortForwardError(RuntimeError):
    """kubectl is missing, exited, or the forward did not open in time."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class PortForward:
    def __init__(
        self,
        *,
        namespace: str,
        service: str,
        port: int,
        context: str | None = None,
        local_port: int | None = None,
        kubectl: str = "kubectl",
        ready_timeout: float = 30.0,
        progress: Progress | None = None,
    ) -> None:
        self.namespace, self.service, self.remote_port = namespace, service, port
        self.context = context
        self.local_port = local_port
        self.kubectl = kubectl
        self.ready_timeout = ready_timeout
        self.progress = progress or (lambda message: None)
        self.host = "127.0.0.1"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Path | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.local_port}"

    def command(self) -> list[str]:
        head = [self.kubectl] + (["--context", self.context] if self.context else [])
        return [
            *head,
            "port-forward",
            "--namespace",
            self.namespace,
            f"svc/{self.service}",
            f"{self.local_port}:{self.remote_port}",
            "--address",
            self.host,
        ]

    def output(self, limit: int = 800) -> str:
        """kubectl's last words (its retries can repeat one error many times)."""
        text = self._log.read_text(errors="replace").strip() if self._log and self._log.exists() else ""
        return text if len(text) <= limit else "…" + text[-limit:]

    @property
    def exit_code(self) -> int | None:
        """kubectl's exit status once it has exited on its own (None while it runs, or after stop)."""
        return self._proc.poll() if self._proc is not None else None

    def state(self, limit: int = 300) -> str:
        """How the forward stands and kubectl's last words, for a message saying what to check.

        Since kubectl 1.23 (kubernetes/kubernetes#103526) a forward that cannot reach the pod
        logs "an error occurred forwarding L -> R: ..." and exits with "error: lost connection
        to pod"; its "Forwarding from" and "Handling connection" lines say nothing of a failure.
        """
        if self._proc is None:
            return "kubectl port-forward is not running"
        code = self._proc.poll()
        head = "kubectl port-forward is running" if code is None else f"kubectl port-forward exited with {code}"
        text = self._log.read_text(errors="replace") if self._log and self._log.exists() else ""
        said = " ".join(
            line.strip()
            for line in text.splitlines()
            if line.strip() and not line.startswith(("Forwarding from", "Handling connection for"))
        )
        said = said if len(said) <= limit else "…" + said[-limit:]
        return head + (f"; it said: {said}" if said else "")

    def start(self) -> PortForward:
        executable = shutil.which(self.kubectl)
        if executable is None:
            raise PortForwardError(
                f"{self.kubectl} not found on PATH; install kubectl, or check a reachable wrapper with --url"
            )
        if self.local_port is None:
            self.local_port = free_port(self.host)
        where = f" (context {self.context})" if self.context else ""
        self.progress(f"port-forward svc/{self.service} -n {self.namespace}{where} → {self.host}:{self.local_port}")
        fd, name = tempfile.mkstemp(prefix="vllm-deploy-port-forward-", suffix=".log")
        self._log = Path(name)
        with os.fdopen(fd, "wb") as log:
            self._proc = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        started = time.monotonic()
        next_note = started + 5
        while not _accepts(self.host, self.local_port):
            code = self._proc.poll()
            if code is not None:
                output = self.output()
                self.stop()
                raise PortForwardError(f"kubectl port-forward exited with {code}: {output or '(no output)'}")
            now = time.monotonic()
            if now - started > self.ready_timeout:
                output = self.output()
                self.stop()
                raise PortForwardError(
                    f"kubectl port-forward did not open {self.host}:{self.local_port} within "
                    f"{self.ready_timeout:g} s: {output or '(no output)'}"
                )
            if now >= next_note:
                self.progress(f"waiting for the port-forward ({now - started:.0f} s)")
                next_note = now + 5
            time.sleep(0.1)
        self.progress(f"port-forward open after {time.monotonic() - started:.1f} s")
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._log is not None:
            self._log.unlink(missing_ok=True)
            self._log = None

    def __enter__(self) -> PortForward:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
