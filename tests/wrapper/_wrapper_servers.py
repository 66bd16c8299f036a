"""Real server processes for the wrapper tests: the fault upstream and the wrapper itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.ports import free_port
from tests.support.processes import ServerProcess as Proc

__all__ = ["REPO", "Proc", "Wrapper", "free_port", "start_in_process"]

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def start_in_process(env: dict[str, str], monkeypatch, capsys, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m wrapper``'s own ``main()`` in this process, for a start that must fail.

    The process does ``sys.exit(main())`` and nothing else, so its exit status and output are
    ``main()``'s; ``test_wrapper_config.py`` checks that once through a real process. ``cwd``
    is where ``main()`` looks for a ``.env`` (pass a directory without one). The answer has the
    shape of the real process's (``subprocess.CompletedProcess``).
    """
    from wrapper.__main__ import main

    for name in [k for k in os.environ if k.startswith("VLLM_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(cwd)

    def settings_were_accepted(level: str) -> None:  # main()'s first step after valid settings
        raise AssertionError("the settings were accepted: main() would configure logging and serve")

    monkeypatch.setattr("wrapper.logs.setup_logging", settings_were_accepted)
    capsys.readouterr()
    code = main([])
    out = capsys.readouterr()
    return subprocess.CompletedProcess(["python", "-m", "wrapper"], code, out.out, out.err)


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
