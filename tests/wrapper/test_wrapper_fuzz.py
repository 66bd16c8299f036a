"""Schemathesis fuzzing of the wrapper's OpenAPI schema: no input may produce a 5xx.

The wrapper runs as a real server in front of the real fault-upstream process (its
well-behaved echo mode), so every generated request travels the whole path.
Bounded: a fixed number of examples per operation and a time budget, which the fuzzing phase
fills: ``FUZZ_SECONDS`` (30 unless set). ``make test-fast`` sets 5: schemathesis's coverage phase
(each operation's boundary and invalid values, about 2 s here) runs whole and the random fuzzing
gets the rest; ``make test`` runs the whole 30 s.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx

from tests.wrapper._wrapper_servers import Wrapper

FUZZ_SECONDS = int(os.environ.get("FUZZ_SECONDS", "30"))

def _st() -> list[str]:
    import shutil
    import sys

    exe = Path(sys.executable).with_name("schemathesis")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("schemathesis")
    assert found, "schemathesis is not installed (pip install -e '.[dev]')"
    return [found]


def test_fuzz_openapi_no_server_errors(fault_upstream, faults, tmp_path):
    key = "fuzz-key-xyz"
    w = Wrapper(fault_upstream.base_url, api_key="upstream-secret-key", wrapper_api_key=key,
                retry_backoff=0.01, timeout=5)
    try:
        assert httpx.get(w.url + "/openapi.json").status_code == 200
        def run(seed: int) -> subprocess.CompletedProcess:
            cmd = [
                *_st(), "run", w.url + "/openapi.json",
                "--checks", "not_a_server_error",
                "--mode", "all",
                "--max-examples", "30",
                "--max-time", str(FUZZ_SECONDS),
                "--seed", str(seed),
                "--workers", "1",
                "--request-timeout", "10",
                "--phases", "examples,coverage,fuzzing",
                "--header", f"Authorization: Bearer {key}",
                "--no-color",
                "--generation-database", "none",
                "--suppress-health-check", "all",
                "--warnings", "off",
            ]
            return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)

        out = run(1234)
        if out.returncode != 0 and "Runtime Error" in out.stdout and "Server error" not in out.stdout:
            # A crash inside the generator itself (seen once: CPython 3.11's "AST constructor
            # recursion depth mismatch" under hypothesis), not a finding: run once more.
            print(out.stdout[-3000:])
            out = run(4321)
        report = out.stdout[-6000:] + out.stderr[-2000:]
        print(report)
        assert out.returncode == 0, report
        assert "No issues found" in out.stdout, report
        served = sum('"wrapper.access"' in line for line in w.log().splitlines())
        # Hundreds of requests in a 5 s run here, thousands in 30 s; fewer than 50 means the
        # generated requests did not reach the wrapper's routes.
        assert served > 50, f"only {served} requests reached the wrapper in {FUZZ_SECONDS} s"
        assert '"status":5' not in w.log().replace(" ", ""), "wrapper answered a 5xx during fuzzing"
    finally:
        w.stop()
