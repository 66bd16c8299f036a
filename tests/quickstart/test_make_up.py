"""`make up` / `make down` on a newcomer's machine that has Docker and nothing else (issue 17), and
on machines that already have some of the tools or a cluster.

Each test runs the Makefile's real targets and scripts in a copy of the checkout, with stand-ins
(standin.py) for docker, kind, kubectl, curl, pulumi, minikube and k3d that record their
arguments and model what the real tools answer. No network, no Docker engine, no cluster here:
what the stand-ins model is said beside each one.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.quickstart.machine import GiB, Machine, host_platform, sha256, tools_env

WRAPPER_IMAGE = "ghcr.io/vllm-deploy/wrapper:0.1.0"
PINS = tools_env()
KIND_CONTEXT = f"kind-{PINS['KIND_CLUSTER_NAME']}"
OS, ARCH = host_platform()


@pytest.fixture(scope="session")
def render_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("render-cache")


@pytest.fixture
def machine(tmp_path: Path, render_cache: Path) -> Machine:
    return Machine(tmp_path, render_cache)


def failure_line(output: str, command: str) -> str:
    """The one line a failed `make up`/`make down` ends with (before make's own `Error 1`)."""
    lines = [line for line in output.splitlines() if line.startswith(f"make {command}: ")]
    assert len(lines) == 1, output
    return lines[0]


def step_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("==> ")]


def assert_deployed_and_smoked(m: Machine, output: str) -> None:
    stack = m.world["pulumi"]["stacks"]["local"]
    assert stack["deployed"], output
    calls = [(c["tool"], c["args"][:2]) for c in m.calls()]
    up = calls.index(("pulumi", ["up", "--stack"]))
    smoke = calls.index(("vllm-deploy", ["smoke", "local"]))
    assert up < smoke
    assert m.ran("kubectl", "-n", "vllm-local", "rollout", "status", "statefulset/vllm")
    assert "==> to reach the wrapper: " in output and "port-forward -n vllm-local svc/vllm-wrapper 8001:8001" in output
    # every quiet step is one line: what it did, then how long it took
    for line in step_lines(output):
        if " ... " in line:
            assert re.search(r"\((\d+m)?\d+s\)$", line), line
    # The generated API key went through stdin, never onto a command line or into the output.
    key = stack["config"]["vllmApiKey"]
    assert len(key) >= 32 and key not in output
    assert all(key not in arg for call in m.calls() for arg in call["args"])
    # Pulumi's state lives in the checkout (the Makefile's file:// backend), never in $HOME.
    assert {c["backend"] for c in m.calls("pulumi")} == {f"file://{m.checkout}/.pulumi-state"}


def assert_nothing_outside(m: Machine) -> None:
    assert list(m.home.iterdir()) == []


# --- from nothing: no kube context ----------------------------------------------------------------


def test_tools_present_and_no_context_creates_a_kind_cluster_that_down_deletes(machine: Machine) -> None:
    m = machine
    m.install("docker", "kind", "kubectl", "pulumi")

    up = m.make("up")

    assert up.status == 0, up.output
    create = next(c for c in m.calls("kind") if c["args"][:2] == ["create", "cluster"])
    assert create["args"][2:] == ["--name", PINS["KIND_CLUSTER_NAME"], "--config",
                                  f"{m.checkout}/scripts/kind-cluster.yaml", "--wait", "5m"]
    assert m.world["kube"]["current"] == KIND_CONTEXT
    # built from wrapper/Dockerfile, then loaded into the new cluster before pulumi up
    assert m.ran("docker", "build", "-f", f"{m.checkout}/wrapper/Dockerfile", "-t", WRAPPER_IMAGE)
    assert m.world["kube"]["contexts"][KIND_CONTEXT]["images"] == [WRAPPER_IMAGE]
    assert_deployed_and_smoked(m, up.output)
    assert m.calls("curl") == [] and not (m.tools / "bin" / "pulumi").exists()
    assert (m.tools / "state" / "kind-cluster").read_text().strip() == PINS["KIND_CLUSTER_NAME"]

    down = m.make("down")

    assert down.status == 0, down.output
    assert m.ran("pulumi", "destroy", "--stack", "local", "--yes")
    assert m.world["pulumi"]["stacks"] == {}
    assert m.ran("kind", "delete", "cluster", "--name", PINS["KIND_CLUSTER_NAME"])
    assert m.world["kind_clusters"] == [] and m.world["kube"]["contexts"] == {}
    assert not (m.tools / "state" / "kind-cluster").exists()
    # the stack file (and its encrypted key) stays in the checkout
    assert (m.checkout / "stacks" / "Pulumi.local.yaml").is_file()
    assert_nothing_outside(m)


def test_tools_absent_are_downloaded_pinned_and_verified_into_dot_tools(machine: Machine) -> None:
    m = machine
    m.install("docker", "curl")  # Docker, and curl to fetch the rest; no pulumi, kind or kubectl
    m.publish_releases()

    up = m.make("up")

    assert up.status == 0, up.output
    fetched = [c["args"][-1] for c in m.calls("curl")]
    assert sorted(fetched) == sorted(m.world["served"])  # each release and its checksum, once
    tools_bin = m.tools / "bin"
    for tool in ("pulumi", "pulumi-language-python", "kind", "kubectl"):
        assert (tools_bin / tool).is_file(), tool
    # the installed copies did the work
    assert {c["path"] for c in m.calls("pulumi")} == {str(tools_bin / "pulumi")}
    assert {c["path"] for c in m.calls("kind")} == {str(tools_bin / "kind")}
    assert {c["path"] for c in m.calls("kubectl")} == {str(tools_bin / "kubectl")}
    assert "==> to reach the wrapper: .tools/bin/kubectl port-forward" in up.output
    assert_deployed_and_smoked(m, up.output)
    assert not list((m.tools / "downloads").glob("*.tar.gz"))

    down = m.make("down")

    assert down.status == 0, down.output
    assert len(m.calls("curl")) == len(fetched)  # nothing downloaded again
    assert m.ran("kind", "delete", "cluster", "--name", PINS["KIND_CLUSTER_NAME"])
    assert m.world["kind_clusters"] == []
    assert_nothing_outside(m)


@pytest.mark.parametrize(
    ("release", "tool", "what"),
    [
        (f"-{OS}-{'x64' if ARCH == 'amd64' else ARCH}.tar.gz", "pulumi", "the Pulumi CLI download"),
        (f"/kind-{OS}-{ARCH}", "kind", "the kind download"),
        ("/kubectl", "kubectl", "the kubectl download"),
    ],
)
def test_a_download_that_does_not_match_its_published_checksum_is_refused(
    machine: Machine, release: str, tool: str, what: str
) -> None:
    m = machine
    m.install("docker", "curl")
    m.publish_releases()
    with m.served_file(release).open("ab") as tampered:  # what a proxy or a cut-short download does
        tampered.write(b"\n# not what was released\n")

    up = m.make("up")

    assert up.status != 0
    line = failure_line(up.output, "up")
    assert line.startswith(f"make up: refusing {what}: checksum mismatch (downloaded ")
    assert not (m.tools / "bin" / tool).exists()
    # the refused file is deleted; only the published checksum files stay
    assert not [p for p in (m.tools / "downloads").iterdir() if not p.name.endswith((".txt", ".sha256"))]
    assert m.world["kind_clusters"] == [] and m.world["pulumi"]["stacks"] == {}
    assert not m.ran("docker", "build") and not m.ran("pulumi", "up")

    down = m.make("down")

    assert down.status == 0, down.output
    assert "nothing to destroy" in down.output


@pytest.mark.parametrize("pinned_right", [True, False])
def test_a_checksum_pinned_in_tools_env_is_checked_as_well(machine: Machine, pinned_right: bool) -> None:
    m = machine
    m.install("docker", "curl", "pulumi", "kubectl")
    m.publish_releases()
    kind = m.served_file(f"/kind-{OS}-{ARCH}")
    value = sha256(kind) if pinned_right else "0" * 64  # the published file still agrees with the download
    with (m.checkout / "scripts" / "tools.env").open("a") as pins:
        pins.write(f"KIND_SHA256_{OS}_{ARCH}={value}\n")

    up = m.make("up")

    if pinned_right:
        assert up.status == 0, up.output
        assert (m.tools / "bin" / "kind").is_file()
    else:
        assert up.status != 0
        assert f"checksum mismatch with KIND_SHA256_{OS}_{ARCH} in scripts/tools.env" in failure_line(up.output, "up")
        assert not (m.tools / "bin" / "kind").exists() and not m.ran("kind")
    assert m.make("down").status == 0


def test_no_network_for_a_download_fails_with_one_line_saying_so(machine: Machine) -> None:
    m = machine
    m.install("docker", "curl")
    m.world["network"] = False
    m.save()

    up = m.make("up")

    assert up.status != 0
    line = failure_line(up.output, "up")
    assert f"cannot download Pulumi {PINS['PULUMI_VERSION']}: no network (curl could not reach get.pulumi.com)" in line
    assert "Connect to the internet and run make up again, or install Pulumi" in line
    assert m.make("down").status == 0


# --- what the laptop lacks ----------------------------------------------------------------------


def test_no_docker_engine_and_no_context_fails_before_creating_anything(machine: Machine) -> None:
    m = machine
    m.install("docker", "kind", "kubectl", "pulumi")
    m.world["docker"]["running"] = False
    m.save()

    up = m.make("up")

    assert up.status != 0
    line = failure_line(up.output, "up")
    assert line.startswith("make up: no Docker engine (kind runs the cluster in Docker): docker info says")
    assert "Cannot connect to the Docker daemon" in line and "Start Docker" in line
    assert not m.ran("kind", "create") and not m.ran("pulumi", "up") and not (m.tools / "state" / "kind-cluster").exists()

    down = m.make("down")
    assert down.status == 0, down.output
    assert not m.ran("kind", "delete")


def test_the_real_docker_client_without_an_engine_is_read_the_same_way(machine: Machine) -> None:
    """Docker's own client (this project's premise: the newcomer has Docker), pointed at a socket
    that does not exist, so that no engine on the machine is ever touched."""
    real_docker = shutil.which("docker")
    if real_docker is None:
        pytest.fail("this test runs Docker's own client: install the docker CLI")
    m = machine
    m.install("kind", "kubectl", "pulumi")
    (m.bin / "docker").symlink_to(real_docker)

    up = m.make("up", env={"DOCKER_HOST": f"unix://{m.tmp}/no-engine.sock", "DOCKER_CONFIG": str(m.tmp / "docker-config")})

    assert up.status != 0
    line = failure_line(up.output, "up")
    assert line.startswith("make up: no Docker engine (kind runs the cluster in Docker): docker info says")
    assert f"Cannot connect to the Docker daemon at unix://{m.tmp}/no-engine.sock" in line
    assert not m.ran("kind", "create")


def test_no_docker_engine_with_a_minikube_context_fails_at_the_image_build(machine: Machine) -> None:
    m = machine
    m.install("docker", "kubectl", "pulumi", "minikube")
    m.add_context("minikube", labels={"minikube.k8s.io/name": "minikube"})
    m.world["docker"]["running"] = False
    m.save()

    up = m.make("up")

    assert up.status != 0
    assert failure_line(up.output, "up").startswith("make up: no Docker engine (the wrapper image is built for minikube)")
    assert not m.ran("pulumi", "up") and m.world["kube"]["current"] == "minikube"
    assert m.make("down").status == 0


def test_no_docker_at_all_names_it(machine: Machine) -> None:
    m = machine
    m.install("kind", "kubectl", "pulumi")

    up = m.make("up")

    assert up.status != 0
    assert "no Docker: the docker command is not installed" in failure_line(up.output, "up")
    assert "https://docs.docker.com/get-docker/" in up.output
    assert m.make("down").status == 0


def test_too_little_docker_memory_for_the_cpu_model_fails_before_kind(machine: Machine) -> None:
    m = machine
    m.install("docker", "kind", "kubectl", "pulumi")
    m.world["docker"]["mem_total"] = 4 * GiB
    m.save()

    up = m.make("up")

    assert up.status != 0
    line = failure_line(up.output, "up")
    assert line.startswith("make up: too little memory for the CPU model: Docker has 4.0 GiB")
    assert "Settings > Resources > Memory" in line
    assert not m.ran("kind", "create")
    assert m.make("down").status == 0


def test_too_little_node_memory_on_an_existing_cluster_fails_before_deploying(machine: Machine) -> None:
    m = machine
    m.install("docker", "kubectl", "pulumi", "minikube")
    m.add_context("minikube", memory="3969324Ki", labels={"minikube.k8s.io/name": "minikube"})

    up = m.make("up")

    assert up.status != 0
    line = failure_line(up.output, "up")
    assert "too little memory for the CPU model: vLLM requests 6.0 GiB, the largest node of minikube has 3.8 GiB" in line
    assert "minikube start --memory=10g" in line
    assert not m.ran("pulumi", "up")
    assert m.make("down").status == 0


# --- a cluster the newcomer already has -----------------------------------------------------------


@pytest.mark.parametrize(
    ("context", "labels", "tool", "load"),
    [
        ("minikube", {"minikube.k8s.io/name": "minikube"}, "minikube", ["-p", "minikube", "image", "load", WRAPPER_IMAGE]),
        ("kind-dev", {}, "kind", ["load", "docker-image", WRAPPER_IMAGE, "--name", "dev"]),
        ("k3d-dev", {}, "k3d", ["image", "import", WRAPPER_IMAGE, "--cluster", "dev"]),
        ("docker-desktop", {}, None, None),
        ("gke_team_europe-west4_gpu", {}, None, None),
    ],
)
def test_an_existing_reachable_context_is_used_as_it_is(
    machine: Machine, context: str, labels: dict[str, str], tool: str | None, load: list[str] | None
) -> None:
    m = machine
    m.install("docker", "kubectl", "pulumi", *([tool] if tool else []))
    m.add_context(context, labels=labels)
    if context.startswith("kind-"):
        m.world["kind_clusters"].append(context.removeprefix("kind-"))
    m.add_context("other", current=False)
    before = {name: {k: v for k, v in c.items() if k != "images"} for name, c in m.world["kube"]["contexts"].items()}

    up = m.make("up")

    assert up.status == 0, up.output
    assert f"using {context} as it is" in up.output
    after = {name: {k: v for k, v in c.items() if k != "images"} for name, c in m.world["kube"]["contexts"].items()}
    assert after == before and m.world["kube"]["current"] == context
    assert not m.ran("kubectl", "config", "use-context")
    assert not m.ran("kind", "create") and not m.ran("kind", "export")
    assert m.world["pulumi"]["stacks"]["local"]["context"] == context
    if load:
        assert m.ran(tool, *load)
    if context.startswith("gke"):
        assert not m.ran("docker", "build")
        assert "is not a kind, minikube or k3d cluster: it pulls" in up.output
    else:
        assert m.ran("docker", "build", "-f", f"{m.checkout}/wrapper/Dockerfile", "-t", WRAPPER_IMAGE)
    assert_deployed_and_smoked(m, up.output)

    down = m.make("down")

    assert down.status == 0, down.output
    assert m.ran("pulumi", "destroy", "--stack", "local", "--yes")
    assert not m.ran("kind", "delete") and m.world["kube"]["current"] == context
    assert "none made by make up: the kube context is left as it is" in down.output
    assert_nothing_outside(m)


def test_an_unreachable_context_gets_a_kind_cluster_and_down_selects_it_again(machine: Machine) -> None:
    m = machine
    m.install("docker", "kind", "kubectl", "pulumi")
    m.add_context("work-vpn", reachable=False)

    up = m.make("up")

    assert up.status == 0, up.output
    assert "work-vpn (it does not answer)" in up.output
    assert m.world["kube"]["current"] == KIND_CONTEXT
    assert m.world["kube"]["contexts"]["work-vpn"] == {"reachable": False, "nodes": [{"memory": "16Gi", "labels": {}}], "images": []}
    assert_deployed_and_smoked(m, up.output)

    down = m.make("down")

    assert down.status == 0, down.output
    assert m.world["kube"]["current"] == "work-vpn" and set(m.world["kube"]["contexts"]) == {"work-vpn"}


def test_a_second_make_up_reuses_the_kind_cluster_the_first_created(machine: Machine) -> None:
    m = machine
    m.install("docker", "kind", "kubectl", "pulumi")
    assert m.make("up").status == 0
    again = m.make("up")
    assert again.status == 0, again.output
    assert len([c for c in m.calls("kind") if c["args"][:2] == ["create", "cluster"]]) == 1
    assert f"using {KIND_CONTEXT} as it is" in again.output
    assert m.make("down").status == 0 and m.world["kind_clusters"] == []


def test_other_stacks_never_get_a_kind_cluster(machine: Machine) -> None:
    m = machine
    m.install("docker", "kind", "kubectl", "pulumi")

    up = m.make("up", "STACK=dev")

    assert up.status != 0
    line = failure_line(up.output, "up")
    assert "no reachable kube context for stack dev (current: none)" in line
    assert "kubectl config use-context" in line
    assert not m.ran("kind", "create")
    assert m.make("down", "STACK=dev").status == 0


def test_a_wrong_stack_config_fails_before_anything_is_created(machine: Machine) -> None:
    m = machine
    m.install("docker", "kind", "kubectl", "pulumi")
    stack_file = m.checkout / "stacks" / "Pulumi.local.yaml"
    stack_file.write_text(stack_file.read_text().replace("type: none", "type: Z80"))

    up = m.make("up")

    assert up.status != 0
    assert "gpu.type" in up.output
    assert "refused its config (above): fix stacks/Pulumi.local.yaml" in failure_line(up.output, "up")
    assert [c["tool"] for c in m.calls()] == ["vllm-deploy"]  # render only


def test_an_unknown_stack_is_named_with_the_ones_there_are(machine: Machine) -> None:
    m = machine
    m.install("docker", "kind", "kubectl", "pulumi")

    up = m.make("up", "STACK=lcoal")

    assert up.status != 0
    assert failure_line(up.output, "up") == (
        "make up: no stack file stacks/Pulumi.lcoal.yaml: pick one of dev, local, modal-dev, modal-prod, prod (make up STACK=NAME)")
    assert m.calls() == []


def test_a_modal_stack_needs_no_cluster_and_is_never_deployed_unasked(machine: Machine) -> None:
    m = machine
    m.install("docker", "kind", "kubectl", "pulumi")

    # A team stack on the file backend needs its passphrase (.ci/pulumi-stack refuses without one),
    # and `make` never creates a team stack: `vllm-deploy bootstrap` does, once (issue 19).
    up = m.make("up", "STACK=modal-dev", env={"PULUMI_CONFIG_PASSPHRASE": "a team passphrase"})

    assert not m.ran("pulumi", "up", "--stack", "modal-dev")
    assert up.status != 0 and failure_line(up.output, "up") == "make up: .ci/pulumi-stack modal-dev failed (above)"
    assert "vllm-deploy bootstrap" in up.output
    assert m.calls("kubectl") == [] and m.calls("docker") == [] and m.calls("kind") == []


# --- the supported Pulumi CLI --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("on_path", "used"),
    [
        (f"v{PINS['PULUMI_VERSION']}", "path"),
        ("v3.999.1", "path"),  # newer 3.x: supported
        ("v3.100.0", "pinned"),  # older than the SDK
        (f"v{PINS['PULUMI_VERSION']}-alpha.1", "pinned"),  # a pre-release of it comes before it
        ("v4.0.0", "pinned"),  # another major version
    ],
)
def test_a_pulumi_cli_on_path_is_used_only_when_supported(machine: Machine, on_path: str, used: str) -> None:
    m = machine
    m.install("docker", "kind", "kubectl", "pulumi", "curl")
    m.publish_releases()
    m.world["pulumi"]["version"] = on_path
    m.save()

    up = m.make("up")

    assert up.status == 0, up.output
    runner = next(c["path"] for c in m.calls("pulumi") if c["args"][:1] == ["up"])
    assert runner == (str(m.bin / "pulumi") if used == "path" else str(m.tools / "bin" / "pulumi"))
    assert m.make("down").status == 0


def test_the_pinned_pulumi_cli_is_the_sdk_version() -> None:
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert f'"pulumi=={PINS["PULUMI_VERSION"]}"' in pyproject


# --- make image -------------------------------------------------------------------------------


def test_make_image_builds_the_wrapper_image(machine: Machine) -> None:
    m = machine
    m.install("docker")

    built = m.make("image")

    assert built.status == 0, built.output
    assert m.ran("docker", "build", "-f", f"{m.checkout}/wrapper/Dockerfile", "-t", WRAPPER_IMAGE, str(m.checkout))
    assert m.world["docker"]["images"] == [WRAPPER_IMAGE]


def test_make_image_without_a_docker_engine_fails_with_one_line(machine: Machine) -> None:
    m = machine
    m.install("docker")
    m.world["docker"]["running"] = False
    m.save()

    built = m.make("image")

    assert built.status != 0
    assert failure_line(built.output, "image").startswith("make image: no Docker engine (make image builds with it)")
    assert not m.ran("docker", "build")


def test_what_make_up_downloads_and_records_is_ignored_by_git() -> None:
    repo = Path(__file__).resolve().parents[2]
    for path in (".tools/bin/pulumi", ".tools/state/kind-cluster", ".tools/logs/up.log", ".pulumi-state/x"):
        ignored = subprocess.run(["git", "check-ignore", "-q", path], cwd=repo, check=False)
        assert ignored.returncode == 0, f"{path} is not git-ignored"
