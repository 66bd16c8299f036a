"""`vllm-deploy bootstrap` against a stand-in `pulumi` (standin_pulumi.py): what it runs, what it writes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.ci.conftest import Project
from tests.ci.standin_pulumi import EMPTY_MARK

CLI = str(Path(sys.executable).parent / "vllm-deploy")
TEAM_STACKS = ["dev", "modal-dev", "modal-prod", "prod"]
HF_TOKEN = "hf_secretvalue_1234567890"
WRAPPER_KEY = "wrapper-key-abcdef"


def bootstrap(project: Project, *args: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, "bootstrap", "--project-dir", str(project.root), *args],
        input=stdin,
        env=project.env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def secret_files(tmp_path: Path) -> Path:
    """<dir>/<stack>/<key>, the layout --secrets-dir reads."""
    for stack in TEAM_STACKS:
        (tmp_path / "secrets" / stack).mkdir(parents=True)
        (tmp_path / "secrets" / stack / "hfToken").write_text(HF_TOKEN + "\n")
    (tmp_path / "passphrase-prod").write_text("prod passphrase\n")
    return tmp_path / "secrets"


def first_run(project: Project, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return bootstrap(
        project,
        "--backend",
        "s3://team-state/vllm",
        "--secrets-provider",
        "dev=passphrase",
        "--secrets-provider",
        "modal-prod=awskms://alias/vllm-modal-prod",
        "--passphrase-file",
        f"prod={tmp_path / 'passphrase-prod'}",
        "--secrets-dir",
        str(secret_files(tmp_path)),
        "--secret",
        "prod:wrapperApiKey=-",
        stdin=WRAPPER_KEY + "\n",
        PULUMI_CONFIG_PASSPHRASE="team dev passphrase",
    )


def test_first_run_creates_every_team_stack_with_its_own_provider_and_sets_its_secrets(
    project: Project, tmp_path: Path
) -> None:
    result = first_run(project, tmp_path)
    assert result.returncode == 0, result.stderr
    calls = [c["argv"] for c in project.calls()]
    assert calls[0] == ["login", "s3://team-state/vllm"]
    inits = {c[2]: c[3:] for c in calls if c[:2] == ["stack", "init"]}
    assert inits == {
        "dev": ["--secrets-provider", "passphrase"],
        "modal-dev": ["--secrets-provider", "passphrase"],
        "modal-prod": ["--secrets-provider", "awskms://alias/vllm-modal-prod"],
        "prod": ["--secrets-provider", "passphrase"],
    }
    # prod's passphrase is its own file; modal-prod's secrets are KMS-encrypted, no salt at all.
    assert project.stack_file("prod")["encryptionsalt"] != project.stack_file("dev")["encryptionsalt"]
    assert "encryptionsalt" not in project.stack_file("modal-prod")
    assert project.stack_file("modal-prod")["secretsprovider"] == "awskms://alias/vllm-modal-prod"
    for stack in TEAM_STACKS:
        config = project.stack_file(stack)["config"]
        assert set(config["vllm-deploy:hfToken"]) == {"secure"}
        assert set(config["vllm-deploy:vllmApiKey"]) == {"secure"}  # generated: nobody has to invent one
    assert "vllm-deploy:wrapperApiKey" in project.stack_file("prod")["config"]
    assert "vllm-deploy:wrapperApiKey" not in project.stack_file("dev")["config"]  # optional: only where given
    assert sorted(project.changed()) == [f"stacks/Pulumi.{s}.yaml" for s in TEAM_STACKS]
    assert "git add stacks/Pulumi." in result.stdout


def test_secret_values_travel_on_stdin_only_and_never_reach_a_file_an_argument_or_the_output(
    project: Project, tmp_path: Path
) -> None:
    result = first_run(project, tmp_path)
    assert result.returncode == 0, result.stderr
    for call in project.calls():
        assert not any(HF_TOKEN in a or WRAPPER_KEY in a for a in call["argv"])
    sets = [c for c in project.calls() if c["argv"][:3] == ["config", "set", "--secret"]]
    assert len(sets) == 2 * len(TEAM_STACKS) + 1 and all(c["stdin_sha"] for c in sets)
    for text in (project.tracked_text(), result.stdout, result.stderr):
        assert HF_TOKEN not in text and WRAPPER_KEY not in text and "prod passphrase" not in text
    assert EMPTY_MARK not in project.tracked_text()


def test_a_second_run_changes_nothing_and_refuses_to_overwrite_a_secret_without_force(
    project: Project, tmp_path: Path
) -> None:
    assert first_run(project, tmp_path).returncode == 0
    before = {s: project.stack_file(s) for s in TEAM_STACKS}
    project.log.unlink()
    again = bootstrap(
        project,
        "--backend",
        "s3://team-state/vllm",
        "--passphrase-file",
        f"prod={tmp_path / 'passphrase-prod'}",
        "--secret",
        "dev:hfToken=" + str(tmp_path / "secrets" / "dev" / "hfToken"),
        PULUMI_CONFIG_PASSPHRASE="team dev passphrase",
    )
    assert again.returncode == 0, again.stderr
    assert "dev: hfToken already set (given, not overwritten: --force replaces it)" in again.stdout
    assert not [c for c in project.calls() if c["argv"][:2] in (["stack", "init"], ["config", "set"])]
    assert {s: project.stack_file(s) for s in TEAM_STACKS} == before

    (tmp_path / "new-token").write_text("hf_rotated\n")
    forced = bootstrap(
        project,
        "--backend",
        "s3://team-state/vllm",
        "--stack",
        "dev",
        "--force",
        "--secret",
        f"dev:hfToken={tmp_path / 'new-token'}",
        PULUMI_CONFIG_PASSPHRASE="team dev passphrase",
    )
    assert forced.returncode == 0, forced.stderr
    assert project.stack_file("dev")["config"]["vllm-deploy:hfToken"] != before["dev"]["config"]["vllm-deploy:hfToken"]


def test_a_passphrase_stack_without_a_passphrase_is_refused_before_anything_runs(project: Project) -> None:
    for env in ({}, {"PULUMI_CONFIG_PASSPHRASE": ""}):
        result = bootstrap(project, "--backend", "s3://team-state/vllm", "--stack", "dev", **env)
        assert result.returncode == 2
        assert result.stderr.splitlines() == [
            "error: dev: a passphrase secrets provider needs a passphrase: --passphrase-file dev=PATH "
            "(or PULUMI_CONFIG_PASSPHRASE_FILE), never an empty one; or --secrets-provider dev=awskms://alias/…"
        ]
        assert project.calls() == [] and project.changed() == []


def test_bad_input_names_each_problem_and_the_fix(project: Project) -> None:
    result = bootstrap(project, "--stack", "staging", "--stack", "local", "--secret", "dev:openaiKey=/nonexistent")
    assert result.returncode == 2
    errors = result.stderr.splitlines()
    assert errors[0].startswith("error: --backend: the team's shared backend is needed")
    assert "error: --stack staging: no stacks/Pulumi.staging.yaml (stacks: dev, modal-dev, modal-prod, prod)" in errors
    assert "error: --stack local: the laptop stack is not bootstrapped (`make up` creates it)" in errors
    assert any("'openaiKey' is not a secret of the stacks" in e for e in errors)
    assert "Traceback" not in result.stderr and project.calls() == []


def test_a_gated_model_without_its_token_fails_naming_the_flag_that_sets_it(project: Project) -> None:
    result = bootstrap(project, "--backend", "https://api.pulumi.com", "--stack", "dev")
    assert result.returncode == 1
    assert "error: dev: hfToken is required for its gated model: --secret dev:hfToken=FILE" in result.stderr
    # Pulumi Cloud: its default (service-managed, per-stack) secrets provider, no passphrase needed.
    assert ["stack", "init", "dev"] in [c["argv"] for c in project.calls()]


def test_a_failed_login_stops_before_any_stack_is_touched(project: Project) -> None:
    project.bin.joinpath("pulumi").write_text("#!/bin/sh\necho 'error: NoCredentialProviders' >&2\nexit 255\n")
    result = bootstrap(project, "--backend", "s3://team-state/vllm", PULUMI_CONFIG_PASSPHRASE="x")
    assert result.returncode == 1
    assert "`pulumi login s3://team-state/vllm` failed: error: NoCredentialProviders" in result.stderr
    assert project.changed() == []


def test_one_kms_provider_for_every_stack_needs_no_passphrase(project: Project, tmp_path: Path) -> None:
    kms = "awskms://alias/vllm?region=eu-west-1"  # its query has an '=', and it is still one provider
    result = bootstrap(
        project,
        "--backend",
        "s3://team-state/vllm",
        "--secrets-provider",
        kms,
        "--secrets-dir",
        str(secret_files(tmp_path)),
    )
    assert result.returncode == 0, result.stderr
    assert {project.stack_file(s)["secretsprovider"] for s in TEAM_STACKS} == {kms}
    assert not any("encryptionsalt" in project.stack_file(s) for s in TEAM_STACKS)
