"""The one way the suites start and stop a server process they need (not vLLM: see real_vllm.py).

    server = ServerProcess([sys.executable, "-m", "wrapper"], port, env={...}, ready="/health")
    ...
    server.stop()

The constructor returns once ``GET <url><ready>`` gets any HTTP answer; it raises with the
process's log when the process exits first or never answers. The log is a file under
``tempfile.gettempdir()``, which tests/conftest.py points into pytest's temp dir.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

__all__ = ["REPO_ROOT", "ServerProcess"]

REPO_ROOT = Path(__file__).resolve().parents[2]
START_DEADLINE = 60.0  # a give-up bound for a hung start, not a speed target: CI boxes can be busy


class ServerProcess:
    """A server subprocess on 127.0.0.1:<port>, stdout and stderr kept in a log file.

    ``VLLM_*`` variables of the test runner's environment are not passed on: each test says the
    settings its server runs with.
    """

    def __init__(
        self,
        cmd: Sequence[str],
        port: int,
        env: Mapping[str, str] | None = None,
        ready: str = "/health",
        cwd: Path = REPO_ROOT,
        nofile: int | None = None,
    ) -> None:
        """``nofile``: the process's RLIMIT_NOFILE, soft and hard (as ``ulimit -n N`` sets it)."""
        self.cmd = list(cmd)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        fd, log = tempfile.mkstemp(prefix="server-", suffix=".log")
        os.close(fd)
        self.log_path = Path(log)
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("VLLM_")}
        full_env.update(env or {})
        full_env.setdefault("PYTHONUNBUFFERED", "1")
        with self.log_path.open("wb") as out:
            limit = None if nofile is None else (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile)))
            self.proc = subprocess.Popen(
                self.cmd, cwd=cwd, env=full_env, stdout=out, stderr=subprocess.STDOUT, preexec_fn=limit
            )
        self._wait_until_it_answers(ready)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s. Idempotent."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def _wait_until_it_answers(self, path: str) -> None:
        deadline = time.monotonic() + START_DEADLINE
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.cmd} exited with {self.proc.returncode}:\n{self.log()}")
            try:
                httpx.get(self.url + path, timeout=1)
                return
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    self.stop()
                    why = f"did not answer {path} in {START_DEADLINE:.0f} s"
                    raise RuntimeError(f"{self.cmd} {why}:\n{self.log()}") from None
                time.sleep(0.05)
