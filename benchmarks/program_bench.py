"""How long the Pulumi program takes to evaluate each stack, under mocks (target: ≤ 2 s).

Cold = a fresh Python process: imports of pulumi and pulumi-kubernetes plus the first run,
which is what `pulumi preview` pays. Warm = a second run in the same process.

    .venv/bin/python benchmarks/program_bench.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_ONE_RUN = """
import json, sys, time
t0 = time.perf_counter()
from tests.infra.pulumi_harness import run_program
t1 = time.perf_counter()
declared = run_program(sys.argv[1])
t2 = time.perf_counter()
run_program(sys.argv[1])
t3 = time.perf_counter()
print(json.dumps({"imports": t1 - t0, "cold": t2 - t1, "warm": t3 - t2, "resources": len(declared)}))
"""


def measure(stack: str) -> dict:
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", _ONE_RUN, stack],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        # Modal stacks check that a token is set before declaring anything; mocks never use it.
        env={**os.environ, "MODAL_TOKEN_ID": "ak-benchmark", "MODAL_TOKEN_SECRET": "as-benchmark"},
    ).stdout
    figures = json.loads(out.strip().splitlines()[-1])
    figures["process"] = time.perf_counter() - start
    return figures


def main() -> None:
    from components.stackfile import stack_names

    print(f"{'stack':<12} {'resources':>9} {'imports s':>10} {'1st run s':>10} {'2nd run s':>10} {'process s':>10}")
    for stack in stack_names():
        try:
            f = measure(stack)
        except subprocess.CalledProcessError as error:
            print(f"{stack:<12} failed: {error.stderr.strip().splitlines()[-1]}")
            continue
        print(
            f"{stack:<12} {f['resources']:>9} {f['imports']:>10.3f} {f['cold']:>10.3f} "
            f"{f['warm']:>10.3f} {f['process']:>10.3f}"
        )


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
