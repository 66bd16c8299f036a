"""Real server processes for the wrapper tests: the fault upstream and the wrapper itself."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.ports import free_port

__all__ = ["REPO", "Proc", "Wrapper", "free_port"]

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


class Proc:
    """A server subprocess on 127.0.0.1:<port>, its stderr kept in a file."""

    def __init__(
        self,
        cmd: list[str],
        port: int,
        env: dict[str, str] | None = None,
        ready: str = "/health",
        cwd: Path = REPO,
        nofile: int | None = None,
    ) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._log = tempfile.NamedTemporaryFile(prefix="wrapper-test-", suffix=".log", delete=False)
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("VLLM_")}
        full_env.update(env or {})
        full_env.setdefault("PYTHONUNBUFFERED", "1")
        # nofile: the process's RLIMIT_NOFILE, soft and hard (as `ulimit -n N` would set it).
        limit = None if nofile is None else (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile)))
        self.proc = subprocess.Popen(
            cmd, cwd=cwd, env=full_env, stdout=self._log, stderr=subprocess.STDOUT, preexec_fn=limit
        )
        deadline = time.monotonic() + 60  # generous: the CI box may be very busy
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{cmd} exited with {self.proc.returncode}:\n{self.log()}")
            try:
                httpx.get(self.url + ready, timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"{cmd} did not start:\n{self.log()}") from None
                time.sleep(0.05)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class FaultUpstream(Proc):
    def __init__(self, api_key: str | None = None) -> None:
        port = free_port()
        cmd = [sys.executable, str(HERE / "upstream_faults.py"), "--port", str(port)]
        if api_key:
            cmd += ["--api-key", api_key]
        super().__init__(cmd, port, ready="/_stats")
        self.base_url = self.url + "/v1"

    def control(self, **cfg) -> dict:
        return httpx.post(self.url + "/_control", json=cfg, timeout=5).json()

    def reset(self, **cfg) -> dict:
        return self.control(reset=True, **cfg)

    def stats(self) -> dict:
        return httpx.get(self.url + "/_stats", timeout=5).json()

    def last(self) -> dict:
        return httpx.get(self.url + "/_last", timeout=5).json()


class Wrapper(Proc):
    """``python -m wrapper`` with the given ``VLLM_*`` settings."""

    def __init__(self, base_url: str, nofile: int | None = None, **settings: object) -> None:
        port = free_port()
        env = {"VLLM_BASE_URL": base_url, "VLLM_WRAPPER_HOST": "127.0.0.1", "VLLM_WRAPPER_PORT": str(port)}
        env.update({f"VLLM_{k.upper()}": str(v) for k, v in settings.items() if v is not None})
        super().__init__([sys.executable, "-m", "wrapper"], port, env=env, ready="/metrics", nofile=nofile)
        self.base_url = self.url + "/v1"

    def metric(self, name: str, **labels: str) -> float:
        """One sample of the wrapper's /metrics (0 when the series is absent)."""
        for family in text_string_to_metric_families(httpx.get(self.url + "/metrics").text):
            for s in family.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    return s.value
        return 0.0
