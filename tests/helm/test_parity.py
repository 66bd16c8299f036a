"""The chart declares what `pulumi up` declares: every Kubernetes stack, the real Helm engine.

The values come from `vllm-deploy values STACK` (the CLI, as a user runs it); the Pulumi side is
`manifests.build(load_stack(STACK)).all()`, the dicts the Pulumi components declare unchanged.
"""

from __future__ import annotations

import copy

import pytest
import yaml
from typer.testing import CliRunner

from components import manifests
from components.cli import app
from components.config import SECRET_KEYS, parse_stack_config
from components.helm_values import helm_values
from components.stackfile import load_stack, stack_names
from tests.helm.chart import differences, identity, normalise, objects, render, render_stack

KUBERNETES_STACKS = [s for s in stack_names() if load_stack(s).target == "kubernetes"]


def cli_values(stack: str, *flags: str) -> dict:
    result = CliRunner().invoke(app, ["values", stack, *flags])
    assert result.exit_code == 0, result.output
    return yaml.safe_load(result.stdout)


def cli_render(stack: str) -> list[dict]:
    result = CliRunner().invoke(app, ["render", stack])
    assert result.exit_code == 0, result.output
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def test_there_are_kubernetes_stacks():
    assert {"local", "dev", "prod"} <= set(KUBERNETES_STACKS)


@pytest.mark.parametrize("stack", KUBERNETES_STACKS)
def test_chart_with_placeholder_secret_equals_pulumi(chart, stack):
    """--secret-placeholders: the chart creates the Secret, so every object is compared.

    `helm template` of `vllm-deploy values STACK` against `vllm-deploy render STACK`.
    """
    config = load_stack(stack)
    rendered = normalise(render_stack(chart, cli_values(stack, "--secret-placeholders"), config))
    pulumi = normalise(cli_render(stack))
    assert pulumi == normalise(manifests.build(config).all())
    assert [identity(o) for o in rendered] == [identity(o) for o in pulumi]
    assert differences(rendered, pulumi) == []


@pytest.mark.parametrize("stack", KUBERNETES_STACKS)
def test_chart_with_existing_secret_equals_pulumi_but_the_secret(chart, stack):
    """The default (recommended): the chart references `<release>-secrets` and declares no Secret,
    nor the Namespace, which must exist before that Secret is created in it."""
    config = load_stack(stack)
    rendered = normalise(render_stack(chart, cli_values(stack), config))
    pulumi = normalise(manifests.build(config).all())
    made_first = ("Secret", "Namespace")
    assert [o for o in pulumi if o["kind"] == "Secret"] and not [o for o in rendered if o["kind"] in made_first]
    assert differences(rendered, [o for o in pulumi if o["kind"] not in made_first]) == []


@pytest.mark.parametrize("stack", KUBERNETES_STACKS)
def test_secret_keys_match_when_the_stack_sets_secrets(chart, stack):
    """A stack with all three secrets set: the same Secret keys on both sides, values aside."""
    config = load_stack(stack).model_copy(update={"secrets_present": frozenset(SECRET_KEYS)})
    values = helm_values(config, "placeholders")
    values["secrets"] |= {"vllmApiKey": "real-key", "hfToken": "hf_real", "wrapperApiKey": "client-key"}
    rendered = render_stack(chart, values, config)
    pulumi = manifests.build(config).all()
    (secret,) = [o for o in rendered if o["kind"] == "Secret"]
    assert secret["stringData"] == {"VLLM_API_KEY": "real-key", "HF_TOKEN": "hf_real", "VLLM_WRAPPER_API_KEY": "client-key"}
    assert differences(normalise(rendered), normalise(pulumi)) == []


# Stack configs beyond the shipped files, so every branch of the templates is compared.
VARIANTS = {
    "cpu-with-placement": {
        "model": {"id": "Qwen/Qwen2.5-0.5B-Instruct", "gated": False},
        "gpu": {"type": "none"},
        "vllm": {"image": "vllm/vllm-cpu@sha256:" + "ab" * 32, "logRequests": True, "logLevel": "debug"},
        "kubernetes": {
            "releaseName": "tiny",
            "namespace": "lab",
            "createNamespace": False,
            "nodeSelector": {"pool": "cpu"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "llm", "effect": "NoExecute"}],
        },
    },
    "h100-everything-set": {
        "model": {"id": "org/Custom-13B-Chat", "revision": "abc123", "parametersBillion": 13},
        "gpu": {"type": "H100", "count": 4},
        "idleTimeout": "1h",
        "vllm": {
            "replicas": 2,
            "maxModelLen": 32768,
            "gpuMemoryUtilization": 0.85,
            "dtype": "float16",
            "quantization": "awq",
            "maxNumSeqs": 128,
            "maxNumBatchedTokens": 16384,
            "enableChunkedPrefill": False,
            "enablePrefixCaching": False,
            "extraArgs": ["--trust-remote-code", "--seed=7"],
            "startupTimeout": "45m",
            "shutdownTimeout": 120,
        },
        "wrapper": {
            "image": "registry.example/wrapper:1.2.3",
            "port": 9000,
            "replicas": {"min": 4, "max": 40},
            "targetCpuUtilization": 50,
            "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"cpu": 2, "memory": "1Gi"}},
            "defaultMaxTokens": 512,
            "defaultTemperature": 0.25,
            "maxRetries": 0,
            "timeout": "5m",
            "wakeTimeout": 0,
            "streamKeepaliveAfter": 2,
            "streamKeepaliveInterval": 20,
        },
        "kubernetes": {
            "releaseName": "chat",
            "namespace": "inference",
            "tolerations": [{"key": "gpu"}],
            "cache": {"storageClass": "fast"},
        },
    },
    # `vllm.replicas: {min, max}`: the scaler's RBAC and VLLM_AUTOSCALE_* env with an always-on
    # floor, and every pod's URL up to max; then a range that also scales to zero.
    "autoscale-1-to-3": {
        "model": {"id": "meta-llama/Llama-3.2-1B-Instruct"},
        "gpu": {"type": "L4"},
        "vllm": {
            "replicas": {"min": 1, "max": 3},
            "autoscale": {"targetInFlight": 4.5, "window": 5, "scaleDownDelay": "2m"},
        },
    },
    "autoscale-0-to-2-with-idle-timeout": {
        "model": {"id": "meta-llama/Llama-3.2-1B-Instruct"},
        "gpu": {"type": "L4"},
        "idleTimeout": "10m",
        "vllm": {"replicas": {"min": 0, "max": 2}, "shutdownTimeout": 90},
    },
    "gpu-without-tolerations": {
        "model": {"id": "meta-llama/Llama-3.2-1B-Instruct"},
        "gpu": {"type": "T4"},
        "kubernetes": {"tolerations": []},
    },
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_chart_equals_pulumi_for_config_variants(chart, variant):
    config = parse_stack_config(VARIANTS[variant], secrets_present={"vllmApiKey"}, require_secrets=False)
    rendered = normalise(render_stack(chart, helm_values(config, "placeholders"), config))
    assert differences(rendered, normalise(manifests.build(config).all())) == []


# ------------------------------------------------- the comparison catches one-sided changes


def test_a_changed_pulumi_field_fails_parity(chart):
    config = load_stack("dev")
    rendered = normalise(render_stack(chart, helm_values(config, "placeholders"), config))
    pulumi = manifests.build(config).all()
    statefulset = next(o for o in pulumi if o["kind"] == "StatefulSet")
    statefulset["spec"]["template"]["spec"]["containers"][0]["startupProbe"]["failureThreshold"] += 1
    found = differences(rendered, normalise(pulumi))
    assert found == [
        "StatefulSet/vllm-dev/vllm: spec.template.spec.containers[0].startupProbe.failureThreshold: "
        "chart 60 != manifests.py 61"
    ]


def test_a_changed_chart_value_fails_parity(chart):
    config = load_stack("prod")
    values = helm_values(config, "placeholders")
    values["vllm"]["maxModelLen"] = 4096
    found = differences(normalise(render_stack(chart, values, config)), normalise(manifests.build(config).all()))
    assert found == ["StatefulSet/vllm-prod/vllm: spec.template.spec.containers[0].args[11]: chart '4096' != manifests.py '8192'"]


def test_an_object_on_one_side_only_fails_parity(chart):
    config = load_stack("dev")
    values = helm_values(config, "placeholders")
    values["idleTimeout"] = 0  # no scale-to-zero RBAC, no wake env vars on the chart side
    found = differences(normalise(render_stack(chart, values, config)), normalise(manifests.build(config).all()))
    assert "ServiceAccount/vllm-dev/vllm-scaler: only in manifests.py" in found
    assert any("VLLM_IDLE_TIMEOUT" in line or "env" in line for line in found)


def test_normalisation_keeps_everything_but_what_it_documents(chart):
    """Type changes, non-Helm labels and Secret keys are still differences."""
    config = load_stack("local").model_copy(update={"secrets_present": frozenset({"vllmApiKey"})})
    rendered = render_stack(chart, helm_values(config, "placeholders"), config)
    pulumi = manifests.build(config).all()
    assert differences(normalise(rendered), normalise(pulumi)) == []

    changed = copy.deepcopy(pulumi)
    next(o for o in changed if o["kind"] == "PodDisruptionBudget")["spec"]["maxUnavailable"] = "1"  # str, not int
    assert differences(normalise(rendered), normalise(changed)) == [
        "PodDisruptionBudget/vllm-local/vllm-wrapper: spec.maxUnavailable: chart 1 != manifests.py '1'"
    ]
    changed = copy.deepcopy(pulumi)
    next(o for o in changed if o["kind"] == "Service")["metadata"]["labels"]["app.kubernetes.io/part-of"] = "x"
    assert len(differences(normalise(rendered), normalise(changed))) == 1
    changed = copy.deepcopy(pulumi)
    next(o for o in changed if o["kind"] == "Secret")["stringData"]["HF_TOKEN"] = manifests.REDACTED
    assert differences(normalise(rendered), normalise(changed)) == [
        "Secret/vllm-local/vllm-secrets: stringData.HF_TOKEN: only in manifests.py ('<compared by key only>')"
    ]


def test_release_and_namespace_come_from_helm(chart):
    """Rendered as another release in another namespace (pins removed), names and namespaces follow."""
    config = load_stack("dev")
    values = helm_values(config)
    del values["kubernetes"]["releaseName"], values["kubernetes"]["namespace"]
    objs = objects(render(chart, values, "other", "elsewhere"))
    assert {o["metadata"]["name"] for o in objs} >= {"other", "other-wrapper", "other-headless", "other-scaler"}
    assert {o["metadata"].get("namespace", o["metadata"]["name"]) for o in objs} == {"elsewhere"}
