"""What `make up` needs to know about a stack, as `name=value` lines for scripts/up.

    python scripts/stack_facts.py STACK VLLM_DEPLOY

target      kubernetes or modal (the stack file's `vllm-deploy:target`)
For a Kubernetes stack, read from `vllm-deploy render STACK` (the objects `pulumi up` creates):
namespace
workloads           every StatefulSet and Deployment, as `statefulset/NAME deployment/NAME ...`
wrapper_image       the wrapper Deployment's image (app.kubernetes.io/component: wrapper)
vllm_image          the first StatefulSet's image (vLLM)
pod_memory_bytes    the largest memory request of one pod (it must fit one node)
total_memory_bytes  every pod's memory requests together (the cluster must hold them all)
wait_seconds        the longest startup budget of a pod (its startupProbe) plus two minutes

A stack whose config is wrong fails here, with render's own one line per problem, before
anything is created.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

STACKS = Path(__file__).resolve().parent.parent / "stacks"
UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def quantity_bytes(quantity: str | int) -> int:
    text = str(quantity)
    for suffix, factor in UNITS.items():
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * factor)
    return int(float(text))


def pod_memory(pod_spec: dict[str, Any]) -> int:
    return sum(
        quantity_bytes(container.get("resources", {}).get("requests", {}).get("memory", 0))
        for container in pod_spec.get("containers", [])
    )


def startup_seconds(pod_spec: dict[str, Any]) -> int:
    probe = pod_spec["containers"][0].get("startupProbe") or {}
    return probe.get("initialDelaySeconds", 0) + probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3)


def kubernetes_facts(stack: str, vllm_deploy: str) -> dict[str, str]:
    rendered = subprocess.run(
        [vllm_deploy, "render", stack, "--stacks-dir", str(STACKS)], check=False, capture_output=True, text=True
    )
    if rendered.returncode != 0:
        sys.stderr.write(rendered.stderr or rendered.stdout)
        raise SystemExit(f"stack {stack}: `vllm-deploy render {stack}` refused its config (above): fix stacks/Pulumi.{stack}.yaml")
    objects = [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]
    workloads = [o for o in objects if o["kind"] in ("StatefulSet", "Deployment")]
    deployments = [o for o in workloads if o["kind"] == "Deployment"]
    wrapper = next(
        (o for o in deployments if o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "wrapper"),
        deployments[0],
    )
    # Replicas a HPA owns are left out of the object: count its minimum, one.
    pods = [(o["spec"].get("replicas", 1), o["spec"]["template"]["spec"]) for o in workloads]
    return {
        "namespace": wrapper["metadata"]["namespace"],
        "workloads": " ".join(f"{o['kind'].lower()}/{o['metadata']['name']}" for o in workloads),
        "wrapper_image": wrapper["spec"]["template"]["spec"]["containers"][0]["image"],
        "vllm_image": next(
            o["spec"]["template"]["spec"]["containers"][0]["image"] for o in workloads if o["kind"] == "StatefulSet"
        ),
        "pod_memory_bytes": str(max(pod_memory(spec) for _, spec in pods)),
        "total_memory_bytes": str(sum(replicas * pod_memory(spec) for replicas, spec in pods)),
        "wait_seconds": str(max(startup_seconds(spec) for _, spec in pods) + 120),
    }


def main() -> None:
    stack, vllm_deploy = sys.argv[1], sys.argv[2]
    stack_file = STACKS / f"Pulumi.{stack}.yaml"
    if not stack_file.is_file():
        known = ", ".join(sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in STACKS.glob("Pulumi.*.yaml")))
        raise SystemExit(f"no stack file stacks/Pulumi.{stack}.yaml: pick one of {known} (make up STACK=NAME)")
    config = (yaml.safe_load(stack_file.read_text()) or {}).get("config") or {}
    facts = {"target": str(config.get("vllm-deploy:target", "kubernetes"))}
    if facts["target"] == "kubernetes":
        facts |= kubernetes_facts(stack, vllm_deploy)
    for name, value in facts.items():
        print(f"{name}={value}")


if __name__ == "__main__":
    main()
