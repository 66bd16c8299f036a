"""Properties every workflow in .github/workflows must keep, as functions that list violations.

Each rule takes the parsed workflows (file name → document) and returns one line per problem, so a
test can show it passes on the real files and catches a mutated copy.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
Workflows = dict[str, dict[str, Any]]

# The whole grant of each job: anything more is a defect, anything less breaks the job.
PERMISSIONS = {
    ("ci.yml", "test"): {"contents": "read"},
    ("ci.yml", "deploy"): {"contents": "read", "id-token": "write"},
    ("ci.yml", "release"): {"contents": "read", "packages": "write"},
    ("preview.yml", "skipped"): {},
    ("preview.yml", "preview"): {"contents": "read", "pull-requests": "write", "id-token": "write"},
    ("deploy.yml", "up"): {"contents": "read", "id-token": "write"},
    ("release.yml", "wrapper-image"): {"contents": "read", "packages": "write"},
}
TRUSTED_PR = (
    "github.event.pull_request.head.repo.full_name == github.repository"
    " && github.event.pull_request.user.login != 'dependabot[bot]'"
)
UNTRUSTED_PR = (
    "github.event.pull_request.head.repo.full_name != github.repository"
    " || github.event.pull_request.user.login == 'dependabot[bot]'"
)
SHA_PIN = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@[0-9a-f]{40}$")


def load() -> Workflows:
    return {p.name: yaml.safe_load(p.read_text()) for p in sorted(WORKFLOWS.glob("*.yml"))}


def triggers(workflow: dict[str, Any]) -> dict[str, Any]:
    return workflow.get(True) or workflow.get("on") or {}  # YAML 1.1 reads the key `on` as True


def steps(workflows: Workflows) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for name, workflow in workflows.items():
        for job_id, job in workflow["jobs"].items():
            for step in job.get("steps", []):
                yield name, job_id, step


def sdk_pulumi_version() -> str:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return next(d.split("==")[1] for d in dependencies if d.startswith("pulumi=="))


def minimal_permissions(workflows: Workflows) -> list[str]:
    problems = []
    for name, workflow in workflows.items():
        if workflow.get("permissions") != {}:
            problems.append(
                f"{name}: the workflow grants {workflow.get('permissions')!r}; grant per job (permissions: {{}})"
            )
        for job_id, job in workflow["jobs"].items():
            want = PERMISSIONS.get((name, job_id))
            if want is None:
                problems.append(f"{name}/{job_id}: a job this test does not know: add its permissions to PERMISSIONS")
            elif job.get("permissions") != want:
                problems.append(f"{name}/{job_id}: permissions {job.get('permissions')!r}, expected exactly {want!r}")
    return problems


def fork_and_dependabot_guard(workflows: Workflows) -> list[str]:
    problems = []
    for name, workflow in workflows.items():
        if "pull_request_target" in triggers(workflow):  # fork code with the base repository's secrets
            problems.append(f"{name}: pull_request_target runs fork code with secrets")
    preview = workflows["preview.yml"]["jobs"]
    if preview["preview"].get("if") != TRUSTED_PR:
        problems.append(f"preview.yml/preview: must run only for same-repository, non-Dependabot PRs: if: {TRUSTED_PR}")
    if preview["skipped"].get("if") != UNTRUSTED_PR:
        problems.append(f"preview.yml/skipped: must note every PR that preview skips: if: {UNTRUSTED_PR}")
    if not any(
        "::notice" in s.get("run", "") and "GITHUB_STEP_SUMMARY" in s.get("run", "")
        for s in preview["skipped"]["steps"]
    ):
        problems.append("preview.yml/skipped: must say why (a notice and the job summary)")
    return problems


def _mentions_secret(value: Any) -> bool:
    return bool(re.search(r"\$\{\{[^}]*\bsecrets[.\[]", str(value)))


def secrets_only_on_steps(workflows: Workflows) -> list[str]:
    problems = []
    for name, workflow in workflows.items():
        if _mentions_secret(workflow.get("env")):
            problems.append(f"{name}: secrets in the workflow's env reach every step")
        for job_id, job in workflow["jobs"].items():
            if _mentions_secret(job.get("env")):
                problems.append(f"{name}/{job_id}: secrets in the job's env reach every step")
            if job.get("secrets") == "inherit":
                problems.append(f"{name}/{job_id}: `secrets: inherit` hands every secret to the called workflow")
    for name, job_id, step in steps(workflows):
        if _mentions_secret(step.get("run")):
            problems.append(f"{name}/{job_id}: a secret in a run script lands in the script file; pass it as step env")
        for key, value in (step.get("with") or {}).items():
            if _mentions_secret(value) and not (step["uses"].startswith("docker/login-action@") and key == "password"):
                problems.append(f"{name}/{job_id}: secret in `with.{key}` of {step['uses']}")
    if "MODAL_TOKEN" in yaml.safe_dump(workflows["preview.yml"]):
        problems.append("preview.yml: a preview never calls Modal: no Modal token")
    return problems


def environment_on_write_jobs(workflows: Workflows) -> list[str]:
    problems = []
    for name, job_id, step in steps(workflows):
        job = workflows[name]["jobs"][job_id]
        if (
            re.search(r"pulumi-ci up|pulumi up", step.get("run", ""))
            and job.get("environment") != "${{ matrix.stack }}"
        ):
            problems.append(f"{name}/{job_id}: `pulumi up` must run in the stack's protected environment")
    if set(triggers(workflows["deploy.yml"])) != {"workflow_call"}:
        problems.append("deploy.yml: only ci.yml may start it (on: workflow_call), after the tests")
    caller = workflows["ci.yml"]["jobs"]["deploy"]
    if (
        caller.get("needs") != "test"
        or caller.get("if") != "github.event_name == 'push' && github.ref == 'refs/heads/main'"
    ):
        problems.append("ci.yml/deploy: must need the tests and run only on a push to main")
    return problems


def sha_pins(workflows: Workflows, texts: dict[str, str]) -> list[str]:
    problems = []
    for name, job_id, step in steps(workflows):
        uses = step.get("uses")
        if uses and not uses.startswith("./") and not SHA_PIN.match(uses):
            problems.append(f"{name}/{job_id}: {uses} is not pinned to a commit SHA")
    for name, text in texts.items():
        for line in text.splitlines():
            if re.match(r"\s*(- )?uses: [^.]", line) and not re.search(r"@[0-9a-f]{40} # v\d+(\.\d+)*$", line):
                problems.append(f"{name}: `{line.strip()}` needs '@<sha> # vX.Y.Z'")
    return problems


def pinned_cli_version(workflows: Workflows) -> list[str]:
    want = sdk_pulumi_version()
    problems = []
    installs = [(n, j, s) for n, j, s in steps(workflows) if s.get("uses", "").startswith("pulumi/actions@")]
    for name, job_id, step in installs:
        got = str((step.get("with") or {}).get("pulumi-version"))
        if got != want:
            problems.append(f"{name}/{job_id}: Pulumi CLI {got}, but pyproject.toml pins the SDK pulumi=={want}")
        if "command" in (step.get("with") or {}):
            problems.append(f"{name}/{job_id}: pulumi/actions' command mode only warns on a failed login")
    if {n for n, _, _ in installs} != {"preview.yml", "deploy.yml"}:
        problems.append("preview.yml and deploy.yml must each install the pinned CLI")
    return problems


def concurrency_groups(workflows: Workflows) -> list[str]:
    problems = []
    ci = workflows["ci.yml"].get("concurrency") or {}
    if (
        ci.get("group") != "ci-${{ github.event.pull_request.number || github.ref }}"
        or ci.get("cancel-in-progress") != "${{ github.event_name == 'pull_request' }}"
    ):
        problems.append("ci.yml: one run per PR or ref; cancel superseded PR runs only (never a deploy on main)")
    preview = workflows["preview.yml"].get("concurrency") or {}
    if preview != {"group": "preview-${{ github.event.pull_request.number }}", "cancel-in-progress": True}:
        problems.append("preview.yml: one run per PR, the newer cancelling the older (no stale diff wins)")
    deploy = workflows["deploy.yml"]["jobs"]["up"]
    if deploy.get("concurrency") != {"group": "deploy-${{ matrix.stack }}", "cancel-in-progress": False}:
        problems.append("deploy.yml/up: serialised per stack and never cancelled mid-update")
    if deploy["strategy"].get("max-parallel") != 1:
        problems.append("deploy.yml/up: stacks deploy one after another (max-parallel: 1)")
    return problems


RULES = [
    minimal_permissions,
    fork_and_dependabot_guard,
    secrets_only_on_steps,
    environment_on_write_jobs,
    pinned_cli_version,
    concurrency_groups,
]
