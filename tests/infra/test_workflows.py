"""The GitHub workflows do what the README promises on a team's first PR, merge and tag.

The CI safety properties (permissions, guards, pins, concurrency) are in tests/ci/.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml

from components.stackfile import load_stack, stack_names

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"


def workflow(name: str) -> dict:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def test_every_pull_request_gets_a_preview_of_every_stack_but_local_with_its_target() -> None:
    job = workflow("preview.yml")["jobs"]["preview"]
    matrix = job["strategy"]["matrix"]["include"]
    assert {m["stack"] for m in matrix} == set(stack_names()) - {"local"}
    for entry in matrix:
        assert entry["target"] == load_stack(entry["stack"]).target
        assert entry["secret"] == entry["stack"].upper().replace("-", "_")
    run = next(s for s in job["steps"] if s.get("name") == "pulumi preview")["run"]
    assert ".ci/pulumi-ci preview" in run
    comment = job["steps"][-1]
    assert comment["if"] == "${{ !cancelled() }}" and "python3 .ci/pr-comment" in comment["run"]  # failures too


def test_the_tests_run_once_per_push_with_pip_and_the_vllm_venv_cached_on_their_pins() -> None:
    ci = workflow("ci.yml")
    test = ci["jobs"]["test"]
    assert {"run": "bash .ci/run"} in test["steps"]
    assert "download.pytorch.org/whl/cpu" in test["env"]["VLLM_PIP_EXTRA_ARGS"]
    setup = next(s for s in test["steps"] if s.get("uses", "").startswith("actions/setup-python@"))
    assert setup["with"]["cache"] == "pip"
    uses = [s.get("uses", "").split("@")[0] for s in test["steps"]]
    restores = {s["with"]["path"]: s for s in test["steps"] if s.get("uses", "").startswith("actions/cache/restore@")}
    saves = {s["with"]["path"]: s for s in test["steps"] if s.get("uses", "").startswith("actions/cache/save@")}
    assert set(restores) == set(saves) == {".venv-vllm", ".venv-checkov"}
    for pin, path in ((".ci/install-vllm", ".venv-vllm"), (".ci/install-checkov", ".venv-checkov")):
        assert f"hashFiles('{pin}')" in restores[path]["with"]["key"]
        assert "steps.python.outputs.python-version" in restores[path]["with"]["key"]
        assert saves[path]["with"]["key"] == f"${{{{ steps.{restores[path]['id']}.outputs.cache-primary-key }}}}"
    # Saved right after the install, before the tests: a red run still keeps a fresh install.
    tests_at = next(i for i, s in enumerate(test["steps"]) if s.get("run") == "bash .ci/run")
    assert uses.index("actions/cache/save") < tests_at
    # Deploy and release are called from here after `test`: no workflow runs the suite a second time.
    assert [j for j, job in ci["jobs"].items() if "steps" in job] == ["test"]
    assert {ci["jobs"][j]["uses"] for j in ("deploy", "release")} == {
        "./.github/workflows/deploy.yml", "./.github/workflows/release.yml"}  # fmt: skip
    for name in ("deploy.yml", "release.yml", "preview.yml"):
        assert "bash .ci/run" not in (WORKFLOWS / name).read_text()


def test_merges_to_main_deploy_dev_by_default_in_its_environment() -> None:
    ci = workflow("ci.yml")["jobs"]["deploy"]
    assert ci["with"]["stacks"] == "${{ vars.DEPLOY_STACKS || '[\"dev\"]' }}"
    up = workflow("deploy.yml")["jobs"]["up"]
    assert up["environment"] == "${{ matrix.stack }}"
    run = next(s for s in up["steps"] if s.get("name") == "pulumi up")
    assert ".ci/pulumi-ci up" in run["run"]


def test_a_tag_publishes_a_multi_arch_image_with_provenance_and_sbom_to_the_owners_namespace() -> None:
    from components.config import WrapperConfig

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    job = workflow("release.yml")["jobs"]["wrapper-image"]
    assert workflow("ci.yml")["jobs"]["release"]["needs"] == "test"
    meta = next(s for s in job["steps"] if s.get("id") == "meta")
    assert 'owner=${OWNER,,}' in meta["run"]  # GHCR names must be lower case
    push = next(s for s in job["steps"] if s.get("uses", "").startswith("docker/build-push"))
    assert push["with"]["file"] == "wrapper/Dockerfile"
    assert push["with"]["platforms"] == "linux/amd64,linux/arm64"
    assert push["with"]["provenance"] == "mode=max" and push["with"]["sbom"] is True
    published = (
        push["with"]["tags"]
        .replace("${{ steps.meta.outputs.owner }}", "vllm-deploy")
        .replace("${{ steps.meta.outputs.version }}", version)
    )
    assert WrapperConfig().image == published  # the default is this repository's own release
    assert "steps.push.outputs.digest" in str(job["steps"][-1]["env"])
