"""Every object a Kubernetes stack declares is valid Kubernetes and passes our policy rules."""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest

from components import manifests, policy
from components.plan import serving_plan
from components.stackfile import load_stack, stack_names

KUBERNETES_VERSIONS = ("1.36.0", "1.37.0")  # the two newest kubernetes-validate 1.37.0 ships
KUBERNETES_STACKS = [s for s in stack_names() if load_stack(s).target == "kubernetes"]


@pytest.fixture(scope="module", params=KUBERNETES_STACKS)
def rendered(request: pytest.FixtureRequest) -> list[dict]:
    return manifests.build(load_stack(request.param)).all()


def test_every_object_is_valid_against_the_kubernetes_schema_in_strict_mode(rendered: list[dict]) -> None:
    errors = []
    for obj in rendered:
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                errors.append(f"{version} {obj['kind']}/{obj['metadata']['name']}: {error.message}")
    assert errors == []


def test_strict_validation_catches_a_misspelt_field() -> None:
    sts = copy.deepcopy(manifests.vllm_statefulset(load_stack("dev"), serving_plan(load_stack("dev"))))
    sts["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(sts, KUBERNETES_VERSIONS[-1], strict=True)


def test_every_object_passes_the_project_policy(rendered: list[dict]) -> None:
    assert policy.violations(rendered) == []


@pytest.mark.parametrize(
    ("break_it", "rule"),
    [
        (lambda o: o[0]["spec"]["template"]["spec"]["containers"][0].update(image="vllm/vllm-openai:latest"), "pinned-images"),
        (lambda o: o[0]["spec"]["template"]["spec"]["containers"][0]["args"].append("--api-key=abc"), "secrets-by-reference"),
        (lambda o: o[0]["spec"]["template"]["spec"]["containers"][0]["env"].append({"name": "HF_TOKEN", "value": "x"}), "secrets-by-reference"),
        (lambda o: o[0]["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"].update(path="/v1/models"), "probed"),
        (lambda o: o[0]["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"].update({"nvidia.com/gpu": "2"}), "bounded-resources"),
        (lambda o: o[0]["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"].pop("memory"), "bounded-resources"),
        (lambda o: o[0]["spec"]["template"]["spec"]["containers"][0].pop("securityContext"), "restricted"),
        (lambda o: o.pop(3), "fenced"),
        (lambda o: o[1]["metadata"]["labels"].pop("app.kubernetes.io/instance"), "labelled"),
    ],
)
def test_each_policy_rule_catches_what_it_guards_against(break_it, rule: str) -> None:
    vllm_objects = copy.deepcopy(manifests.build(load_stack("dev")).vllm)
    break_it(vllm_objects)
    assert any(v.startswith(f"[{rule}]") for v in policy.violations(vllm_objects))


def test_rendered_secrets_are_redacted(rendered: list[dict]) -> None:
    secret = next(o for o in rendered if o["kind"] == "Secret")
    assert set(secret["stringData"].values()) <= {manifests.REDACTED}
