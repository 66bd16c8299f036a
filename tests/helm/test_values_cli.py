"""`vllm-deploy values STACK`: the values file a Pulumi user hands to a Helm / GitOps team."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from components.cli import app
from components.config import parse_stack_config
from components.helm_values import helm_values
from components.stackfile import load_stack

STACK = """\
config:
  vllm-deploy:target: {target}
  vllm-deploy:model: {{id: meta-llama/Llama-3.1-8B-Instruct}}
  vllm-deploy:gpu: {{type: H100}}
  vllm-deploy:idleTimeout: 10m
  vllm-deploy:hfToken: {{secure: v1:abc}}
  vllm-deploy:vllmApiKey: {{secure: v1:def}}
  vllm-deploy:kubernetes: {{namespace: team-a, releaseName: chat, context: prod-cluster}}
"""


def run(*args: str):
    return CliRunner().invoke(app, ["values", *args])


@pytest.fixture
def stacks(tmp_path: Path) -> Path:
    (tmp_path / "Pulumi.k8s.yaml").write_text(STACK.format(target="kubernetes"))
    (tmp_path / "Pulumi.serverless.yaml").write_text(STACK.format(target="modal"))
    return tmp_path


def test_values_file_says_how_to_install_it_and_where_secrets_go(stacks):
    result = run("k8s", "--stacks-dir", str(stacks))
    assert result.exit_code == 0, result.output
    assert "# helm upgrade --install chat charts/vllm-deploy -n team-a -f values.yaml" in result.stdout
    assert "kubectl create namespace team-a" in result.stdout
    assert "kubectl create secret generic chat-secrets -n team-a --from-env-file=secrets.env" in result.stdout
    assert "--from-literal" not in result.stdout
    values = yaml.safe_load(result.stdout)
    assert values["idleTimeout"] == 600
    assert values["secrets"] == {"create": False, "existingSecret": "chat-secrets"}
    assert values["kubernetes"]["releaseName"] == "chat" and values["kubernetes"]["namespace"] == "team-a"
    # Where Pulumi deploys is not the chart's business (helm --kube-context), nor are other targets.
    assert "context" not in values["kubernetes"]
    assert not {"target", "modal", "cost"} & values.keys()


def test_secret_placeholders_mark_the_stacks_secrets_by_key(stacks):
    result = run("k8s", "--stacks-dir", str(stacks), "--secret-placeholders")
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.stdout)["secrets"] == {
        "create": True, "hfToken": "<redacted>", "vllmApiKey": "<redacted>"
    }  # fmt: skip
    assert "v1:abc" not in result.stdout and "v1:def" not in result.stdout


def test_values_refuses_a_modal_stack(stacks):
    result = run("serverless", "--stacks-dir", str(stacks))
    assert result.exit_code == 2
    assert "targets modal" in result.output
    with pytest.raises(ValueError, match="targets modal"):
        helm_values(load_stack("serverless", stacks))


def test_values_reports_a_bad_stack_like_render(stacks):
    (stacks / "Pulumi.bad.yaml").write_text("config:\n  vllm-deploy:model: {id: x}\n  vllm-deploy:gpu: {count: 0}\n")
    result = run("bad", "--stacks-dir", str(stacks))
    assert result.exit_code == 2 and "gpu.count" in result.output


def test_derived_numbers_are_passed_explicitly():
    config = parse_stack_config({"model": {"id": "meta-llama/Llama-3.1-70B-Instruct"}, "gpu": {"count": 2}},
                                require_secrets=False)  # fmt: skip
    values = helm_values(config)
    assert values["vllm"]["startupTimeout"] > 1200  # 131 GiB to download
    assert values["kubernetes"]["cache"]["size"].endswith("Gi")
    assert values["model"]["servedName"] == "llama-3.1-70b-instruct"
