"""`make up` picks vLLM's CPU image for the nodes' architecture (issue 12, day 1 point 6).

vLLM publishes its CPU build as one image per architecture (vllm-project/vllm:
docs/getting_started/installation/cpu.*.inc.md): `vllm-cpu-release-repo` (x86_64) and
`vllm-arm64-cpu-release-repo` (arm64, e.g. Apple silicon); neither starts on the other's nodes.
The laptop stack follows its nodes; a team's stack file is reviewed, so `make up` only names the fix.
Stand-ins as in test_make_up.py; the nodes' architecture is what kubectl's stand-in reports.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.quickstart.machine import Machine

X86 = "public.ecr.aws/q9t5s3a7/vllm-cpu-release-repo:v0.32.0"
ARM = "public.ecr.aws/q9t5s3a7/vllm-arm64-cpu-release-repo:v0.32.0"


@pytest.fixture(scope="session")
def render_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("render-cache")


@pytest.fixture
def machine(tmp_path: Path, render_cache: Path) -> Machine:
    return Machine(tmp_path, render_cache)


def laptop(m: Machine, arch: str) -> None:
    m.install("docker", "kubectl", "pulumi", "kind")
    m.add_context("kind-mac")
    m.world["kind_clusters"].append("mac")
    m.world["kube"]["contexts"]["kind-mac"]["nodes"][0]["arch"] = arch
    m.save()


def stack_file(m: Machine, stack: str = "local") -> Path:
    return m.checkout / "stacks" / f"Pulumi.{stack}.yaml"


def test_on_arm64_nodes_the_local_stack_deploys_the_arm64_image(machine: Machine) -> None:
    m = machine
    laptop(m, "arm64")  # an Apple-silicon laptop's kind node
    before = stack_file(m).read_text()
    assert X86 in before

    up = m.make("up")

    assert up.status == 0, up.output
    assert f"stacks/Pulumi.local.yaml now deploys {ARM} (vLLM's arm64 CPU build)" in up.output
    after = stack_file(m).read_text()
    assert after == before.replace(X86, ARM)  # that line only: comments and every other key kept
    assert m.world["pulumi"]["stacks"]["local"]["deployed"]
    # pulumi up reads the same stack file render does: render now prints the arm64 image
    vllm_deploy = Path(sys.executable).with_name("vllm-deploy")
    rendered = subprocess.run(
        [vllm_deploy, "render", "local", "--stacks-dir", str(m.checkout / "stacks")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"image: {ARM}" in rendered and X86 not in rendered


def test_a_second_make_up_on_the_same_laptop_finds_the_image_right(machine: Machine) -> None:
    m = machine
    laptop(m, "arm64")
    assert m.make("up").status == 0

    again = m.make("up")

    assert again.status == 0, again.output
    assert "built for arm64, like the nodes" in again.output


def test_on_x86_nodes_nothing_changes(machine: Machine) -> None:
    m = machine
    laptop(m, "amd64")
    before = stack_file(m).read_text()

    up = m.make("up")

    assert up.status == 0, up.output
    assert "built for amd64, like the nodes" in up.output
    assert stack_file(m).read_text() == before


def test_the_arm64_image_on_x86_nodes_goes_back_to_the_x86_image(machine: Machine) -> None:
    m = machine
    laptop(m, "amd64")
    stack_file(m).write_text(stack_file(m).read_text().replace(X86, ARM))

    up = m.make("up")

    assert up.status == 0, up.output
    assert X86 in stack_file(m).read_text() and ARM not in stack_file(m).read_text()


def test_a_team_stack_is_never_rewritten_it_names_the_image_to_set(machine: Machine) -> None:
    m = machine
    laptop(m, "arm64")
    team = stack_file(m).read_text().replace("namespace: vllm-local", "namespace: vllm-lab")
    stack_file(m, "lab").write_text(team)

    up = m.make("up", "STACK=lab", env={"PULUMI_CONFIG_PASSPHRASE": "a passphrase"})

    assert up.status != 0
    (line,) = [line for line in up.output.splitlines() if line.startswith("make up: ")]
    assert f"vLLM's image {X86} is built for amd64, but the nodes of kind-mac are arm64" in line
    assert f"set vllm.image to {ARM} in stacks/Pulumi.lab.yaml" in line
    assert stack_file(m, "lab").read_text() == team
    assert not m.ran("pulumi", "up")
