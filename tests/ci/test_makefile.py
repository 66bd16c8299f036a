"""The Makefile's Pulumi settings and .ci/pulumi-stack, run by `make` against a stand-in `pulumi`.

No secret and no empty-passphrase salt may land in a tracked stack file, except `local`'s.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.ci.conftest import Project
from tests.ci.standin_pulumi import EMPTY_MARK


def make(project: Project, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    venv = project.root.parent / "venv"  # `install` is up to date: no pip run in these tests
    venv.mkdir(exist_ok=True)
    os.utime(project.root / "pyproject.toml", (1, 1))
    (venv / ".installed").touch()
    return subprocess.run(
        ["make", "-s", f"VENV={venv}", *args],
        cwd=project.root,
        env=project.env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )


SHOW_ENV = '_env: ; @echo "backend=$${PULUMI_BACKEND_URL-unset} passphrase=$${PULUMI_CONFIG_PASSPHRASE-unset}"'


def exported(project: Project, *args: str, **env: str) -> str:
    result = make(project, "--eval", SHOW_ENV, "_env", *args, **env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def log_in(project: Project, url: str) -> None:
    """What `pulumi login URL` leaves behind (~/.pulumi/credentials.json)."""
    (project.home / ".pulumi").mkdir()
    (project.home / ".pulumi" / "credentials.json").write_text(json.dumps({"current": url, "accounts": {}}))


def test_without_a_login_the_local_file_backend_is_the_default(project: Project) -> None:
    assert exported(project) == f"backend=file://{project.root}/.pulumi-state passphrase="


def test_an_existing_pulumi_login_or_backend_url_is_respected_for_team_stacks(project: Project) -> None:
    assert exported(project, "STACK=dev") == f"backend=file://{project.root}/.pulumi-state passphrase=unset"
    assert exported(project, "STACK=dev", PULUMI_BACKEND_URL="s3://mine").startswith("backend=s3://mine ")
    log_in(project, "s3://team-state")
    assert exported(project, "STACK=dev").startswith("backend=unset ")  # the CLI uses the login


def test_the_local_stack_stays_on_the_laptop_even_when_logged_in_to_the_team_backend(project: Project) -> None:
    log_in(project, "s3://team-state")  # else every developer's `make up` would share one `local` stack
    assert exported(project) == f"backend=file://{project.root}/.pulumi-state passphrase="
    assert exported(project, PULUMI_BACKEND_URL="s3://mine").startswith("backend=s3://mine ")


def test_only_the_local_stack_defaults_to_no_passphrase(project: Project) -> None:
    assert exported(project, "STACK=local").endswith(" passphrase=")
    assert exported(project, "STACK=dev").endswith(" passphrase=unset")


def test_a_team_stack_on_the_file_backend_without_a_passphrase_is_refused_in_one_line(project: Project) -> None:
    for env in ({}, {"PULUMI_CONFIG_PASSPHRASE": ""}):
        result = make(project, "preview", "STACK=dev", **env)
        assert result.returncode != 0
        assert result.stderr.splitlines()[0] == (
            "stack dev needs its passphrase: export PULUMI_CONFIG_PASSPHRASE_FILE=~/.secrets/dev-passphrase "
            "(or bootstrap it with a KMS secrets provider: vllm-deploy bootstrap --help)"
        )
        assert project.calls() == [] and project.changed() == []


def test_a_team_stack_is_never_created_nor_given_secrets_by_make(project: Project) -> None:
    result = make(project, "preview", "STACK=dev", PULUMI_CONFIG_PASSPHRASE="a real one")
    assert result.returncode != 0
    assert "stack dev does not exist in file://" in result.stderr and "vllm-deploy bootstrap" in result.stderr
    assert [c["argv"] for c in project.calls()] == [["stack", "select", "dev"]]
    assert project.changed() == []


def test_a_bootstrapped_team_stack_previews_with_the_developers_login(project: Project) -> None:
    log_in(project, "s3://team-state")
    project.seed_backend("dev")
    result = make(project, "preview", "STACK=dev", PULUMI_CONFIG_PASSPHRASE="the team's")
    assert result.returncode == 0, result.stderr
    calls = project.calls()
    assert [c["argv"][:2] for c in calls] == [["stack", "select"], ["preview", "--diff"]]
    assert {c["PULUMI_BACKEND_URL"] for c in calls} == {None}  # nothing overrode the login
    assert project.changed() == []


def test_the_local_stack_is_created_with_no_passphrase_and_a_generated_key(project: Project) -> None:
    result = make(project, "preview")
    assert result.returncode == 0, result.stderr
    assert (project.root / ".pulumi-state").is_dir()
    assert project.changed() == ["stacks/Pulumi.local.yaml"]  # the one stack allowed to carry them
    local = project.stack_file("local")
    assert local["encryptionsalt"].endswith(EMPTY_MARK) and "secure" in local["config"]["vllm-deploy:vllmApiKey"]
    team_files = "".join(
        p.read_text() for p in Path(project.root, "stacks").glob("Pulumi.*.yaml") if p.name != "Pulumi.local.yaml"
    )
    assert EMPTY_MARK not in team_files and "secure" not in team_files
