"""The chart on its own: lint, schema, strict Kubernetes validation, secrets, NOTES, labels, drift."""

from __future__ import annotations

import copy
import json
import re

import helm_python
import kubernetes_validate
import pytest
import yaml

from components import catalog, gpu_pool, manifests
from components.config import StackConfig, VllmConfig, parse_stack_config
from components.helm_values import helm_values
from components.plan import serving_plan
from components.secrets import SECRET_ENV
from components.stackfile import load_stack, stack_names
from tests.helm.chart import CHART_DIR, MINIMAL, NOTES, objects, render, render_stack

KUBERNETES_VERSIONS = ("1.36.0", "1.37.0")
KUBERNETES_STACKS = [s for s in stack_names() if load_stack(s).target == "kubernetes"]


def with_values(**sections) -> dict:
    values = copy.deepcopy(MINIMAL)
    for key, value in sections.items():
        values[key] = value
    return values


def by_kind(objs: list[dict], kind: str) -> list[dict]:
    return [o for o in objs if o["kind"] == kind]


def container(objs: list[dict], kind: str) -> dict:
    (obj,) = by_kind(objs, kind)
    return obj["spec"]["template"]["spec"]["containers"][0]


def env(objs: list[dict], kind: str) -> dict[str, dict]:
    return {e["name"]: e for e in container(objs, kind)["env"]}


# ----------------------------------------------------------------------------- lint


def test_lint_is_clean_in_strict_mode_with_the_required_value():
    report = helm_python.lint(CHART_DIR, MINIMAL, strict=True)
    assert report["errors"] == []
    # Severity 1 is informational (the missing icon URL); strict mode fails on warnings (2) and up.
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_lint_is_clean_in_strict_mode_on_the_charts_own_defaults():
    """`helm lint charts/vllm-deploy` as a Helm user runs it: no values, no errors, no warnings."""
    report = helm_python.lint(CHART_DIR, strict=True)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_the_default_model_is_a_small_public_one_users_replace(chart):
    vllm = container(objects(render(chart, {}, "vllm", "vllm")), "StatefulSet")
    assert vllm["args"][:2] == ["--model", "Qwen/Qwen2.5-0.5B-Instruct"]


def test_chart_yaml_pins_the_vllm_image_vllm_deploy_pins():
    chart_yaml = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    default_image = VllmConfig().image
    assert chart_yaml["apiVersion"] == "v2"
    assert chart_yaml["appVersion"] == default_image.rsplit(":", 1)[-1]
    assert yaml.safe_load((CHART_DIR / "values.yaml").read_text())["vllm"]["image"] == default_image


# --------------------------------------------------------------------------- schema


@pytest.mark.parametrize(
    ("values", "where", "says"),
    [
        (with_values(gpu={"type": "X100"}), "/gpu/type", "must be one of"),
        (with_values(gpu={"count": 0}), "/gpu/count", "minimum"),
        (with_values(idleTimeout=-1), "/idleTimeout", "minimum"),
        ({"model": {"id": None}}, "/model", "missing property 'id'"),  # null removes the default
        ({"model": {"id": ""}}, "/model/id", "minLength"),
        (with_values(vllm={"image": "vllm/vllm-openai"}), "/vllm/image", "does not match pattern"),
        (with_values(vllm={"gpuMemoryUtilization": 1.5}), "/vllm/gpuMemoryUtilization", "maximum"),
        (with_values(vllm={"maxModleLen": 4096}), "/vllm", "additional properties 'maxModleLen'"),
    ],
)
def test_schema_rejects_bad_values(chart, values, where, says):
    with pytest.raises(helm_python.HelmValuesError) as error:
        render(chart, values, "vllm", "vllm")
    assert f"at '{where}'" in str(error.value) and says in str(error.value)


@pytest.mark.parametrize(
    ("values", "key"),
    [
        (with_values(vllm={"image": "vllm/vllm-openai:latest"}), "vllm.image"),
        (with_values(vllm={"extraArgs": ["--api-key=abc"]}), "vllm.extraArgs"),
        (with_values(wrapper={"replicas": {"min": 5, "max": 2}}), "wrapper.replicas.max"),
        (with_values(kubernetes={"namespace": "prod"}), "kubernetes.namespace"),
        (with_values(kubernetes={"releaseName": "llm"}), "kubernetes.releaseName"),
        (with_values(secrets={"create": True, "existingSecret": "mine"}), "secrets.existingSecret"),
    ],
)
def test_templates_refuse_what_the_schema_cannot_express(chart, values, key):
    with pytest.raises(helm_python.HelmRenderError, match=re.escape(key)):
        render(chart, values, "vllm", "vllm")


def test_schema_knows_the_gpu_types_of_the_catalog(chart):
    assert chart.schema["properties"]["gpu"]["properties"]["type"]["enum"] == [*catalog.GPUS, catalog.CPU]


@pytest.mark.parametrize("gpu", sorted(catalog.GPUS))
def test_node_selection_uses_every_product_label_of_the_catalog(chart, gpu):
    objs = objects(render(chart, with_values(gpu={"type": gpu}), "vllm", "vllm"))
    (statefulset,) = by_kind(objs, "StatefulSet")
    pod = statefulset["spec"]["template"]["spec"]
    wanted = gpu_pool.placement({"nvidia.com/gpu.product": list(catalog.GPUS[gpu].node_products)})
    assert {k: pod.get(k) for k in ("nodeSelector", "affinity") if k in pod} == wanted


def test_values_yaml_defaults_are_the_stack_configs_defaults(chart):
    """Where a key means the same, a hand-written values file and a stack file default alike."""
    defaults = helm_values(StackConfig(model={"id": "org/model"}))
    chart_defaults = chart.values

    def set_only(d):
        return {k: set_only(v) if isinstance(v, dict) else v for k, v in d.items() if v is not None}

    for section in ("gpu", "wrapper"):
        assert set_only(chart_defaults[section]) == defaults[section], section
    assert chart_defaults["idleTimeout"] == defaults["idleTimeout"]
    assert chart_defaults["model"]["gated"] == defaults["model"]["gated"]
    # startupTimeout is derived from the model's size by vllm-deploy; the chart defaults to 30 min.
    # vllm.autoscale (off while its min and max are null): tests/helm/test_autoscale_chart.py.
    chart_vllm = {k: v for k, v in set_only(chart_defaults["vllm"]).items() if k != "autoscale"}
    assert chart_vllm == {k: v for k, v in defaults["vllm"].items() if k != "startupTimeout"}


def test_renders_with_only_the_required_value(chart):
    objs = objects(render(chart, MINIMAL, "vllm", "vllm"))
    assert sorted(o["kind"] for o in objs) == sorted(
        ["StatefulSet", "Service", "Service", "NetworkPolicy", "Deployment", "Service",
         "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy"]
    )  # fmt: skip
    vllm = container(objs, "StatefulSet")
    assert vllm["args"][:4] == ["--model", "Qwen/Qwen2.5-7B-Instruct", "--served-model-name", "qwen2.5-7b-instruct"]
    assert vllm["startupProbe"]["failureThreshold"] == 180  # the documented 30 min default


# ------------------------------------------------------------ strict Kubernetes schemas


def every_render(chart) -> dict[str, list[dict]]:
    renders = {"minimal": objects(render(chart, MINIMAL, "vllm", "vllm"))}
    for stack in KUBERNETES_STACKS:
        config = load_stack(stack)
        for mode in ("existing", "placeholders"):
            renders[f"{stack}/{mode}"] = render_stack(chart, helm_values(config, mode), config)
    cpu = parse_stack_config({"model": {"id": "Qwen/Qwen2.5-0.5B-Instruct"}, "gpu": {"type": "none"}, "idleTimeout": 60}, require_secrets=False)
    renders["cpu-scale-to-zero"] = render_stack(chart, helm_values(cpu), cpu)
    return renders


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_rendered_object_passes_strict_kubernetes_validation(chart, version):
    checked, seen = 0, set()
    for name, objs in every_render(chart).items():
        for obj in objs:
            text = json.dumps(obj, sort_keys=True)
            if text in seen:  # the same object from another render: validated already
                continue
            seen.add(text)
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                pytest.fail(f"{name}: {obj['kind']}/{obj['metadata']['name']}: {error}")
            checked += 1
    assert checked > 40


# ------------------------------------------------------------------------- secrets


def test_created_secret_has_manifests_name_and_keys(chart):
    values = with_values(secrets={"create": True, "vllmApiKey": "k1", "hfToken": "hf", "wrapperApiKey": "k2"})
    objs = objects(render(chart, values, "vllm", "vllm"))
    (secret,) = by_kind(objs, "Secret")
    assert secret["metadata"]["name"] == "vllm-secrets" == manifests.Names("vllm", "vllm").secret
    assert secret["stringData"] == {
        SECRET_ENV["vllmApiKey"]: "k1",
        SECRET_ENV["hfToken"]: "hf",
        SECRET_ENV["wrapperApiKey"]: "k2",
    }
    refs = {(e["name"], e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
            for kind in ("StatefulSet", "Deployment") for e in container(objs, kind)["env"] if "valueFrom" in e}  # fmt: skip
    assert refs == {(k, "vllm-secrets", k) for k in ("VLLM_API_KEY", "HF_TOKEN", "VLLM_WRAPPER_API_KEY")}


def test_created_secret_leaves_out_empty_values(chart):
    values = with_values(secrets={"create": True, "vllmApiKey": "k1"})
    (secret,) = by_kind(objects(render(chart, values, "vllm", "vllm")), "Secret")
    assert secret["stringData"] == {"VLLM_API_KEY": "k1"}


def test_existing_secret_is_referenced_not_created(chart):
    objs = objects(render(chart, with_values(secrets={"existingSecret": "llm-keys"}), "vllm", "vllm"))
    assert by_kind(objs, "Secret") == []
    names = {e["valueFrom"]["secretKeyRef"]["name"] for kind in ("StatefulSet", "Deployment")
             for e in container(objs, kind)["env"] if "valueFrom" in e}  # fmt: skip
    assert names == {"llm-keys"}


def test_values_for_a_stack_reference_the_existing_secret_by_default():
    config = load_stack("prod")
    assert helm_values(config)["secrets"] == {"create": False, "existingSecret": "vllm-secrets"}
    assert helm_values(config, "placeholders")["secrets"] == {"create": True}
    with_keys = config.model_copy(update={"secrets_present": frozenset({"hfToken", "vllmApiKey"})})
    assert helm_values(with_keys, "placeholders")["secrets"] == {
        "create": True, "hfToken": manifests.REDACTED, "vllmApiKey": manifests.REDACTED
    }  # fmt: skip
    assert "<redacted>" not in json.dumps(helm_values(with_keys))


# ------------------------------------------------------------- checksum, labels, RBAC


def checksums(chart, values) -> set[str]:
    objs = objects(render(chart, values, "vllm", "vllm"))
    return {
        o["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        for o in objs
        if o["kind"] in ("StatefulSet", "Deployment")
    }


def test_checksum_annotation_rolls_pods_when_the_secret_changes(chart):
    created = with_values(secrets={"create": True, "vllmApiKey": "one"})
    (first,) = checksums(chart, created)
    assert checksums(chart, copy.deepcopy(created)) == {first}  # stable
    rotated = with_values(secrets={"create": True, "vllmApiKey": "two"})
    (second,) = checksums(chart, rotated)
    assert second != first
    (other_secret,) = checksums(chart, with_values(secrets={"existingSecret": "other"}))
    assert other_secret not in (first, second)


def test_conventional_labels_and_no_hard_coded_namespace(chart):
    objs = objects(render(chart, with_values(kubernetes={"createNamespace": True}, idleTimeout=30), "rel", "ns-x"))
    for obj in objs:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "vllm-deploy"
        assert labels["app.kubernetes.io/instance"] == "rel"
        # Services carry no version: an image bump must not update and re-await them.
        assert labels.get("app.kubernetes.io/version", "none") == ("none" if obj["kind"] == "Service" else "v0.32.0")
        assert labels["app.kubernetes.io/component"]
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["helm.sh/chart"] == "vllm-deploy-0.1.0"
        assert obj["metadata"].get("namespace", obj["metadata"]["name"]) == "ns-x"
    for template in (CHART_DIR / "templates").glob("*.yaml"):
        for line in template.read_text().splitlines():
            if re.match(r"\s*namespace:", line):
                assert ".Release.Namespace" in line, f"{template.name}: {line.strip()}"


def test_version_label_of_an_image_digest_matches_manifests(chart):
    image = "vllm/vllm-openai@sha256:" + "0f" * 32
    objs = objects(render(chart, with_values(vllm={"image": image}), "vllm", "vllm"))
    config = parse_stack_config({"model": {"id": "x/y"}, "vllm": {"image": image}}, require_secrets=False)
    versioned = [o for o in objs if o["kind"] != "Service"]
    assert {o["metadata"]["labels"]["app.kubernetes.io/version"] for o in versioned} == {manifests.app_version(config)}


def test_scale_to_zero_rbac_and_env_only_with_an_idle_timeout(chart):
    dev = load_stack("dev")
    assert dev.scales_to_zero
    objs = render_stack(chart, helm_values(dev), dev)
    rbac = [o for o in objs if o["kind"] in ("ServiceAccount", "Lease", "Role", "RoleBinding")]
    expected = manifests.scaler_rbac(dev)
    for obj in rbac + expected:
        for label in ("helm.sh/chart", "app.kubernetes.io/managed-by"):
            obj["metadata"]["labels"].pop(label, None)
    assert sorted(rbac, key=lambda o: o["kind"]) == sorted(expected, key=lambda o: o["kind"])
    assert list(env(objs, "Deployment").values()) == manifests.wrapper_env(dev, serving_plan(dev))
    (deployment,) = by_kind(objs, "Deployment")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "vllm-scaler"

    prod = load_stack("prod")
    assert not prod.scales_to_zero
    objs = render_stack(chart, helm_values(prod), prod)
    assert not [o for o in objs if o["kind"] in ("ServiceAccount", "Lease", "Role", "RoleBinding")]
    assert not {"VLLM_IDLE_TIMEOUT", "VLLM_WAKE_TIMEOUT"} & env(objs, "Deployment").keys()
    (deployment,) = by_kind(objs, "Deployment")
    assert deployment["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


# --------------------------------------------------------------------------- NOTES


@pytest.mark.parametrize("stack", KUBERNETES_STACKS)
def test_notes_print_the_port_forward_and_a_curl(chart, stack):
    config = load_stack(stack)
    notes = render(chart, helm_values(config), config.kubernetes.release_name, config.kubernetes.namespace)[NOTES]
    lines = [line.strip() for line in notes.splitlines()]
    assert manifests.port_forward_command(config) in lines
    port = config.wrapper.port
    assert f"curl http://localhost:{port}/v1/chat/completions \\" in lines
    assert f'"model": "{config.model.name}"' in notes
    assert f"kubectl create secret generic {manifests.names(config).secret} -n {config.kubernetes.namespace}" in notes


def test_notes_warn_about_placeholder_secrets(chart):
    values = with_values(secrets={"create": True, "vllmApiKey": manifests.REDACTED})
    notes = render(chart, values, "vllm", "vllm")[NOTES]
    assert "placeholders" in notes and "gated" in notes and "kubectl create secret" not in notes


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_chart_leaves_replicas_to_the_hpa_and_the_scaler(chart, stack):
    # `helm upgrade` (and an Argo CD sync) applies what the chart renders: a replicas field there
    # would reset the HPA's count and wake a GPU the wrapper scaled to zero (issue 12).
    config = load_stack(stack)
    rendered = render_stack(chart, helm_values(config), config)
    by_kind = {o["kind"]: o for o in rendered}
    assert "replicas" not in by_kind["Deployment"]["spec"]
    assert ("replicas" in by_kind["StatefulSet"]["spec"]) == (not config.scales_to_zero)
