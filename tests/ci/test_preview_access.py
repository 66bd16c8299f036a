"""The preview's read-only cluster access, and its report when something is missing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from components import manifests
from components.stackfile import load_stack, stack_names
from tests.ci.conftest import ROOT, Project
from tests.infra.test_manifests import KUBERNETES_VERSIONS


def resource(kind: str) -> str:
    """The API's plural resource name of a kind (NetworkPolicy → networkpolicies)."""
    name = kind.lower()
    return name[:-1] + "ies" if name.endswith("y") else name + "s"


RBAC = ROOT / "deploy" / "ci" / "preview-rbac.yaml"


def test_the_preview_role_reads_every_kind_a_stack_declares_but_secrets_and_writes_nothing() -> None:
    documents = list(yaml.safe_load_all(RBAC.read_text()))
    role = next(d for d in documents if d["kind"] == "ClusterRole")
    readable = {
        (group, resource) for rule in role["rules"] for group in rule["apiGroups"] for resource in rule["resources"]
    }
    assert {verb for rule in role["rules"] for verb in rule["verbs"]} == {"get", "list", "watch"}
    assert not any(resource == "secrets" or "*" in (group, resource) for group, resource in readable)
    declared = set()
    for stack in stack_names():
        config = load_stack(stack)
        if config.target == "kubernetes":
            declared |= {
                (o["apiVersion"].rpartition("/")[0], resource(o["kind"])) for o in manifests.build(config).all()
            }
    assert declared - {("", "secrets")} <= readable
    for document in documents:  # valid objects for the cluster versions the project supports
        kubernetes_validate.validate(document, KUBERNETES_VERSIONS[-1], strict=True)
    binding = next(d for d in documents if d["kind"] == "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert (
        binding["subjects"][0]["name"]
        == next(d for d in documents if d["kind"] == "ServiceAccount")["metadata"]["name"]
    )


def pulumi_ci(project: Project, tmp_path: Path, *args: str, **env: str) -> tuple[int, str]:
    report = tmp_path / "report.md"
    result = subprocess.run(
        [sys.executable, str(project.root / ".ci" / "pulumi-ci"), *args, "--report", str(report)],
        env=project.env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.returncode, report.read_text()


def test_a_preview_without_a_backend_says_which_variable_to_set(project: Project, tmp_path: Path) -> None:
    code, report = pulumi_ci(project, tmp_path, "preview", "dev", "--passphrase-secret", "PULUMI_CONFIG_PASSPHRASE_DEV")
    assert code == 1
    assert report.startswith("### ❌ `preview` of `dev` failed — missing: **backend login**")
    assert "PULUMI_BACKEND_URL" in report and project.calls() == []


def test_a_preview_of_a_stack_not_yet_bootstrapped_says_so(project: Project, tmp_path: Path) -> None:
    code, report = pulumi_ci(project, tmp_path, "preview", "dev", PULUMI_BACKEND_URL="s3://team")
    assert code == 1
    assert "missing: **stack**" in report and "vllm-deploy bootstrap" in report


def test_a_bootstrapped_stack_without_its_passphrase_or_kubeconfig_names_the_secret(
    project: Project, tmp_path: Path
) -> None:
    project.seed_backend("dev")
    doc = project.stack_file("dev") | {"encryptionsalt": "v1:standin:abc"}
    (project.root / "stacks" / "Pulumi.dev.yaml").write_text(yaml.safe_dump(doc))
    args = (
        "preview",
        "dev",
        "--passphrase-secret",
        "PULUMI_CONFIG_PASSPHRASE_DEV",
        "--kubeconfig-secret",
        "PREVIEW_KUBECONFIG_DEV",
    )
    code, report = pulumi_ci(project, tmp_path, *args, PULUMI_BACKEND_URL="s3://team")
    assert code == 1 and "missing: **secret**" in report and "PULUMI_CONFIG_PASSPHRASE_DEV" in report
    code, report = pulumi_ci(project, tmp_path, *args, PULUMI_BACKEND_URL="s3://team", PULUMI_CONFIG_PASSPHRASE="p")
    assert code == 1 and "missing: **cluster access**" in report and "PREVIEW_KUBECONFIG_DEV" in report
    (tmp_path / "kubeconfig").write_text("apiVersion: v1\nkind: Config\n")
    code, report = pulumi_ci(
        project,
        tmp_path,
        *args,
        PULUMI_BACKEND_URL="s3://team",
        PULUMI_CONFIG_PASSPHRASE="p",
        KUBECONFIG=str(tmp_path / "kubeconfig"),
    )
    assert code == 0, report
    assert report.startswith("### ✅ `preview` of `dev` (kubernetes) succeeded: + 3 to create")


def bootstrapped(project: Project, tmp_path: Path) -> dict[str, str]:
    project.seed_backend("dev")
    doc = project.stack_file("dev") | {"encryptionsalt": "v1:standin:abc"}
    (project.root / "stacks" / "Pulumi.dev.yaml").write_text(yaml.safe_dump(doc))
    (tmp_path / "kubeconfig").write_text("apiVersion: v1\nkind: Config\n")
    return {
        "PULUMI_BACKEND_URL": "s3://team",
        "PULUMI_CONFIG_PASSPHRASE": "p",
        "KUBECONFIG": str(tmp_path / "kubeconfig"),
    }


# The engine's own words for each failure (pulumi-kubernetes' and the Pulumi CLI's messages).
FAILURES = [
    (
        'error: configmaps is forbidden: User "system:serviceaccount:vllm-deploy-ci:vllm-deploy-preview" cannot create',
        "cluster access",
    ),
    ("error: configured Kubernetes cluster is unreachable: unable to load schema information", "cluster access"),
    (
        "error: program failed: invalid stack config\nstack dev: vllmApiKey: required (vLLM is never left open)",
        "secret",
    ),
    ('error: constructing secrets manager of type "passphrase": incorrect passphrase', "secret"),
    ("error: the stack is currently locked by 1 lock(s). Either wait for the other process(es) to end", "state lock"),
]


@pytest.mark.parametrize(("engine_says", "missing"), FAILURES, ids=[f[1] + ":" + f[0][7:30] for f in FAILURES])
def test_a_failed_preview_is_named_from_the_engines_output(
    project: Project, tmp_path: Path, engine_says: str, missing: str
) -> None:
    env = bootstrapped(project, tmp_path)
    code, report = pulumi_ci(project, tmp_path, "preview", "dev", **env, STANDIN_FAIL=engine_says)
    assert code == 1
    assert f"missing: **{missing}**" in report
    assert engine_says.splitlines()[-1].split(": ", 1)[-1][:30] in report  # the evidence is quoted


def test_an_up_writes_the_job_summary_with_the_outputs_and_secrets_masked(project: Project, tmp_path: Path) -> None:
    env = bootstrapped(project, tmp_path)
    summary = tmp_path / "summary.md"
    code, report = pulumi_ci(
        project, tmp_path, "up", "dev", **env, GITHUB_STEP_SUMMARY=str(summary), GITHUB_SHA="a" * 40
    )
    assert code == 0
    assert summary.read_text() == report
    assert report.startswith("### ✅ `up` of `dev` (kubernetes) succeeded: + 3 to create\n\nCommit `aaaaaaaaaaaa`.")
    assert '"hf_token": "[secret]"' in report
    assert ["up", "--yes", "--diff", "--skip-preview", "--color", "never", "--stack", "dev"] in [
        c["argv"] for c in project.calls()
    ]


def test_on_pulumi_cloud_the_organizations_stack_is_previewed_with_its_service_managed_key(
    project: Project, tmp_path: Path
) -> None:
    project.seed_backend("team/modal-dev")  # bootstrapped there: no salt, no key in the stack file
    code, report = pulumi_ci(
        project, tmp_path, "preview", "modal-dev", PULUMI_ACCESS_TOKEN="pul-oidc-token", PULUMI_ORGANIZATION="team"
    )
    assert code == 0, report
    argv = [c["argv"] for c in project.calls()]
    assert argv[0] == ["login", "https://api.pulumi.com"]
    assert ["preview", "--diff", "--color", "never", "--stack", "team/modal-dev"] in argv
    assert "pul-oidc-token" not in report
