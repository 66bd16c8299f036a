"""The stand-in `kubectl` the preflight tests put first on PATH: a cluster recorded as JSON files.

It appends its arguments (JSON, one line per run) to $PREFLIGHT_KUBECTL_LOG, then answers
from the scenario in $PREFLIGHT_CLUSTER (written by tests/preflight/conftest.py):

    {"current_context": "gke_…", "contexts": [...], "unreachable": false,
     "answers": {"get nodes": "nodes-gke-gpu.json", "get namespace vllm-dev": {"error": "forbidden"}, …},
     "can_i": {"create secrets --namespace vllm-dev": "no"}}

`answers` is keyed by the command with kubectl's global flags (--context, -o json,
--request-timeout) taken out; a value is a fixture file name under fixtures/. What is not
listed is answered as a real API server would: a named object is NotFound, a core list is
empty, any other resource type is unknown to the server (no such CRD installed). `can-i`
answers "yes" unless listed. The error texts are kubectl's own (kubectl 1.31).
"""

from __future__ import annotations

import json
import os
import sys

# os.path, not pathlib: pathlib's import is a sixth of this program's start-up, and it runs
# once per kubectl call (a dozen per preflight)
FIXTURES = os.path.join(os.path.dirname(os.path.realpath(__file__)), "fixtures")
CORE_LISTS = {"nodes", "storageclasses", "daemonsets", "events", "namespaces", "configmaps"}


def main(argv: list[str]) -> int:
    with open(os.environ["PREFLIGHT_KUBECTL_LOG"], "a") as log:
        log.write(json.dumps(argv) + "\n")
    with open(os.environ["PREFLIGHT_CLUSTER"]) as f:
        scenario = json.load(f)
    args, context = [], scenario["current_context"]
    rest = iter(argv)
    for arg in rest:
        if arg == "--context":
            context = next(rest)
        elif arg == "-o":
            next(rest)
        elif not arg.startswith("--request-timeout="):
            args.append(arg)
    if args == ["config", "current-context"]:
        print(scenario["current_context"])
        return 0
    if context not in scenario["contexts"]:
        print(f'error: context "{context}" does not exist', file=sys.stderr)
        return 1
    if scenario.get("unreachable"):
        print("Unable to connect to the server: dial tcp 34.118.224.1:443: i/o timeout", file=sys.stderr)
        return 1
    key = " ".join(args)
    if args[:2] == ["auth", "can-i"]:
        allowed = scenario.get("can_i", {}).get(" ".join(args[2:]), "yes")
        print(allowed)
        return 0 if allowed == "yes" else 1
    answer = scenario["answers"].get(key)
    if isinstance(answer, str):
        with open(os.path.join(FIXTURES, answer)) as f:
            sys.stdout.write(f.read())
        return 0
    resource = args[1]
    if isinstance(answer, dict) and answer.get("error") == "forbidden":
        print(
            f'Error from server (Forbidden): {resource} is forbidden: User "dev@example.com" cannot list '
            f'resource "{resource}" in API group "" at the cluster scope',
            file=sys.stderr,
        )
        return 1
    named = len(args) > 2 and not args[2].startswith("--")
    if named:
        print(f'Error from server (NotFound): {resource}s "{args[2]}" not found', file=sys.stderr)
        return 1
    if resource in CORE_LISTS:
        print(json.dumps({"apiVersion": "v1", "items": [], "kind": "List", "metadata": {"resourceVersion": ""}}))
        return 0
    print(f'error: the server doesn\'t have a resource type "{resource.split(".")[0]}"', file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
