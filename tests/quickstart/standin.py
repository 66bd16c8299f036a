#!/usr/bin/env -S python3 -S
"""Stand-ins for docker, kind, kubectl, curl, pulumi, minikube, k3d and `vllm-deploy smoke`.

One program (run with `python3 -S`: it needs only the standard library, and starts fast),
linked under each tool's name (its behaviour follows the name it was run as). Each
call appends {"tool", "path", "args", "backend"} to $STANDIN_LOG (JSON lines); the machine they
pretend to be -- is Docker's engine up, which kube contexts exist and answer, what the network
serves -- lives in $STANDIN_WORLD (JSON), which tests set up and read back.

Each answer models what the real tool prints and exits with in that situation (cited per tool);
a command the quick start is not expected to run exits 97, so a test sees it.
"""

from __future__ import annotations

import json
import os
import sys

# pathlib and typing would be a third of this program's start-up (it runs ~30 times per `make up`)
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn

WORLD = os.environ["STANDIN_WORLD"]
LOG = os.environ["STANDIN_LOG"]
# the Docker client's words without an engine (moby/moby, client/errors.go: ErrorConnectionFailed),
# which `docker info` prints after an empty line on stdout (observed with docker 28.2.2 here)
NO_ENGINE = "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?"


def load() -> dict[str, Any]:
    with open(WORLD) as f:
        return json.load(f)


def save(world: dict[str, Any]) -> None:
    with open(WORLD, "w") as f:
        f.write(json.dumps(world, indent=1))


def fail(message: str, status: int = 1) -> NoReturn:
    print(message, file=sys.stderr)
    raise SystemExit(status)


def unmodelled(tool: str, args: list[str]) -> NoReturn:
    fail(f"standin {tool}: unmodelled command {args}", 97)


def option(args: list[str], *names: str) -> str | None:
    """The value of `--name value` or `--name=value`."""
    for i, arg in enumerate(args):
        for name in names:
            if arg == name and i + 1 < len(args):
                return args[i + 1]
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def words(args: list[str], with_values: tuple[str, ...] = ()) -> list[str]:
    """The positional words, without flags and the values of the flags named."""
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg in with_values:
            skip = True
        elif not arg.startswith("-"):
            out.append(arg)
    return out


# --- curl(1): -f makes an HTTP error exit 22; exit 6 is "Could not resolve host" ------------------
def curl(args: list[str]) -> None:
    world = load()
    url = words(args, ("-o", "--output", "--retry", "--connect-timeout", "--max-time"))[-1]
    out = option(args, "-o", "--output")
    if not world["network"]:
        fail(f"curl: (6) Could not resolve host: {url.split('/')[2]}", 6)
    served = world["served"].get(url)
    if served is None:
        fail("curl: (22) The requested URL returned error: 404", 22)
    with open(served, "rb") as source, open(out, "wb") as target:
        target.write(source.read())


# --- docker --------------------------------------------------------------------------------------
def docker(args: list[str]) -> None:
    world = load()
    engine = world["docker"]
    if not engine["running"]:
        print()  # the real client prints an empty line on stdout before the error
        fail(NO_ENGINE)
    if args[:1] == ["info"]:
        fmt = option(args, "--format", "-f")
        print({"{{.ServerVersion}}": "28.2.2", "{{.MemTotal}}": str(engine["mem_total"])}[fmt])
    elif args[:1] == ["build"]:
        dockerfile, tag = option(args, "-f", "--file"), option(args, "-t", "--tag")
        if not os.path.isfile(dockerfile):
            fail(f"ERROR: failed to read dockerfile: open {dockerfile}: no such file or directory")
        engine["images"].append(tag)
        save(world)
        print(f"naming to docker.io/{tag} done")
    else:
        unmodelled("docker", args)


# --- kind (https://kind.sigs.k8s.io/docs/user/quick-start/): `create cluster` adds the context
# kind-NAME to the kubeconfig and makes it current; `delete cluster` removes it again. ----------
def kind(args: list[str]) -> None:
    world = load()
    name = option(args, "--name") or "kind"
    clusters, kube = world["kind_clusters"], world["kube"]
    if args[:2] == ["get", "clusters"]:
        if clusters:
            print("\n".join(clusters))
        else:
            print("No kind clusters found.", file=sys.stderr)
    elif args[:2] == ["create", "cluster"]:
        if not world["docker"]["running"]:
            fail(f"ERROR: failed to create cluster: {NO_ENGINE}")
        if name in clusters:
            fail(f'ERROR: failed to create cluster: node(s) already exist for a cluster with the name "{name}"')
        config = option(args, "--config")
        if config is None or not os.path.isfile(config):
            fail(f"ERROR: failed to create cluster: open {config}: no such file or directory")
        clusters.append(name)
        memory = f"{world['docker']['mem_total'] // 1024}Ki"
        kube["contexts"][f"kind-{name}"] = {"reachable": True, "nodes": [{"memory": memory, "labels": {}}], "images": []}
        kube["current"] = f"kind-{name}"
        save(world)
        print(f'Set kubectl context to "kind-{name}"')
    elif args[:2] == ["delete", "cluster"]:
        if name in clusters:
            clusters.remove(name)
            kube["contexts"].pop(f"kind-{name}", None)
            if kube["current"] == f"kind-{name}":
                kube["current"] = ""
            save(world)
        print(f'Deleting cluster "{name}" ...')
    elif args[:2] == ["load", "docker-image"]:
        image = words(args, ("--name",))[2]
        if name not in clusters:
            fail(f'ERROR: no nodes found for cluster "{name}"')
        if image not in world["docker"]["images"]:
            fail(f'ERROR: image: "{image}" not present locally')
        kube["contexts"][f"kind-{name}"]["images"].append(image)
        save(world)
    elif args[:2] == ["export", "kubeconfig"]:
        if name not in clusters:
            fail(f'ERROR: could not locate any control plane nodes for cluster named "{name}"')
        kube["current"] = f"kind-{name}"
        save(world)
    else:
        unmodelled("kind", args)


# --- minikube / k3d: copy an image from Docker into the cluster ---------------------------------
def minikube(args: list[str]) -> None:
    world = load()
    profile = option(args, "-p", "--profile") or "minikube"
    rest = words(args, ("-p", "--profile"))
    if rest[:2] != ["image", "load"]:
        unmodelled("minikube", args)
    world["kube"]["contexts"][profile]["images"].append(rest[2])
    save(world)


def k3d(args: list[str]) -> None:
    world = load()
    cluster = option(args, "--cluster", "-c") or "k3s-default"
    rest = words(args, ("--cluster", "-c"))
    if rest[:2] != ["image", "import"]:
        unmodelled("k3d", args)
    world["kube"]["contexts"][f"k3d-{cluster}"]["images"].append(rest[2])
    save(world)


# --- kubectl: messages as kubectl prints them (k8s.io/client-go clientcmd; kubectl rollout) -------
def kubectl(args: list[str]) -> None:
    world = load()
    kube = world["kube"]
    rest = [a for a in args if not a.startswith("--request-timeout")]
    current = kube["current"]
    if rest[:2] == ["config", "current-context"]:
        if not current:
            fail("error: current-context is not set")
        print(current)
        return
    if rest[:2] == ["config", "use-context"]:
        if rest[2] not in kube["contexts"]:
            fail(f'error: no context exists with the name: "{rest[2]}"')
        kube["current"] = rest[2]
        save(world)
        print(f'Switched to context "{rest[2]}".')
        return
    if rest[:2] == ["config", "get-contexts"]:
        if rest[2] not in kube["contexts"]:
            fail(f'error: context {rest[2]} not found')
        print(rest[2])
        return
    # everything else talks to the API server of the current context
    if not current:
        fail("The connection to the server localhost:8080 was refused - did you specify the right host or port?")
    cluster = kube["contexts"][current]
    if not cluster["reachable"]:
        fail("Unable to connect to the server: dial tcp 127.0.0.1:6443: connect: connection refused")
    if rest[:2] == ["get", "--raw=/readyz"]:
        print("ok")
    elif rest[:2] == ["get", "nodes"]:
        path = option(rest, "-o")
        if "allocatable.memory" in path:
            print(" ".join(node["memory"] for node in cluster["nodes"]))
        elif "architecture" in path:
            print(" ".join(node.get("arch", "amd64") for node in cluster["nodes"]))
        elif "minikube" in path:
            print(cluster["nodes"][0]["labels"].get("minikube.k8s.io/name", ""), end="")
        else:
            unmodelled("kubectl", args)
    elif "rollout" in rest and "status" in rest:
        print(f'{words(rest, ("-n", "--namespace"))[2]} successfully rolled out')
    else:
        unmodelled("kubectl", args)


# --- pulumi: the CLI's stack and config commands on the DIY (file) backend ------------------------
# (https://www.pulumi.com/docs/iac/concepts/state-and-backends/: a file:// backend keeps its state
# under <dir>/.pulumi/; `stack select` without --create fails for a stack that does not exist.)
def pulumi(args: list[str]) -> None:
    world = load()
    state = world["pulumi"]
    stacks = state["stacks"]
    stack = option(args, "--stack", "-s") or state["current"]
    rest = words(args, ("--stack", "-s", "--secrets-provider"))
    if rest[:1] == ["version"]:
        print(state["version"])
    elif rest[:2] == ["stack", "select"]:
        name = rest[2]
        if name not in stacks:
            if "--create" not in args:
                fail(f"error: no stack named '{name}' found", 255)
            stacks[name] = {"config": {}, "deployed": False}
            from pathlib import Path

            backend = Path(os.environ["PULUMI_BACKEND_URL"].removeprefix("file://"))
            (backend / ".pulumi" / "stacks" / "vllm-deploy").mkdir(parents=True, exist_ok=True)
            (backend / ".pulumi" / "stacks" / "vllm-deploy" / f"{name}.json").write_text("{}")
        state["current"] = name
        save(world)
    elif rest[:2] == ["config", "get"]:
        value = stacks[stack]["config"].get(rest[2])
        if value is None:
            fail(f"error: configuration key 'vllm-deploy:{rest[2]}' not found for stack '{stack}'", 255)
        print(value)
    elif rest[:2] == ["config", "set"]:
        value = sys.stdin.read().strip() if len(rest) == 3 else rest[3]
        stacks[stack]["config"][rest[2]] = value
        save(world)
    elif rest[:1] == ["up"]:
        if "--yes" not in args and not sys.stdin.isatty():
            fail("error: --yes or --skip-preview must be passed in to proceed when running in non-interactive mode", 255)
        current = world["kube"]["contexts"].get(world["kube"]["current"])
        if not current or not current["reachable"]:
            fail("error: configured Kubernetes cluster is unreachable", 255)
        stacks[stack]["deployed"] = True
        stacks[stack]["context"] = world["kube"]["current"]
        save(world)
        print("Resources:\n    + 14 created")
    elif rest[:2] == ["stack", "output"]:
        if not stacks[stack]["deployed"]:
            fail(f"error: current stack does not have output property '{rest[2]}'", 255)
        print("kubectl port-forward -n vllm-local svc/vllm-wrapper 8001:8001")
    elif rest[:1] == ["destroy"]:
        stacks[stack]["deployed"] = False
        save(world)
        print("Resources:\n    - 14 deleted")
    elif rest[:2] == ["stack", "rm"]:
        name = rest[2] if len(rest) > 2 else stack
        if stacks.get(name, {}).get("deployed") and "--force" not in args:
            fail(f"error: '{name}' still has resources; removal rejected", 255)
        stacks.pop(name, None)
        save(world)
    else:
        unmodelled("pulumi", args)


# --- $VENV/bin/vllm-deploy: `smoke` stands in (it needs a served wrapper); the rest is the real CLI.
# The real `render` output is kept per stack file content ($RENDER_CACHE, one test session), so
# the same stack file is rendered once, not once per `make up` (it takes seconds).
def vllm_deploy(args: list[str]) -> None:
    import hashlib
    import subprocess
    from pathlib import Path

    real = os.environ["REAL_VLLM_DEPLOY"]
    if args[:1] == ["render"]:
        stack_file = Path(option(args, "--stacks-dir") or "stacks") / f"Pulumi.{args[1]}.yaml"
        key = hashlib.sha256(args[1].encode() + b"\0" + stack_file.read_bytes()).hexdigest()
        cached = Path(os.environ["RENDER_CACHE"]) / f"{key}.yaml"
        if not cached.exists():
            done = subprocess.run([real, *args], capture_output=True, text=True, check=False)
            if done.returncode != 0:
                sys.stdout.write(done.stdout)
                fail(done.stderr.rstrip("\n"), done.returncode)
            cached.write_text(done.stdout)
        sys.stdout.write(cached.read_text())
        return
    if args[:1] != ["smoke"]:
        os.execv(real, [real, *args])
    print("PASS  health   0.01s  the wrapper answers; vLLM available")
    raise SystemExit(load()["smoke_exit"])


TOOLS = {"curl": curl, "docker": docker, "kind": kind, "kubectl": kubectl, "pulumi": pulumi,
         "minikube": minikube, "k3d": k3d, "vllm-deploy": vllm_deploy,
         "pulumi-language-python": lambda args: unmodelled("pulumi-language-python", args)}


def main() -> None:
    tool = os.path.basename(sys.argv[0])
    args = sys.argv[1:]
    with open(LOG, "a") as log:
        log.write(json.dumps({"tool": tool, "path": sys.argv[0], "args": args,
                              "backend": os.environ.get("PULUMI_BACKEND_URL")}) + "\n")
    TOOLS[tool](args)


if __name__ == "__main__":
    main()
