"""Real server processes for the wrapper tests: the fault upstream and the wrapper itself."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.ports import free_port
from tests.support.processes import ServerProcess as Proc

__all__ = ["REPO", "Proc", "Wrapper", "free_port"]

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


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
