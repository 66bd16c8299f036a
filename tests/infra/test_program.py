"""The real Pulumi program, run under mocks for every Kubernetes stack file."""

from __future__ import annotations

import math

import pulumi
import pytest

from components import kubernetes as k8s_component
from components import manifests
from components.plan import serving_plan
from components.stackfile import load_stack, stack_names
from tests.infra.pulumi_harness import TEST_SECRETS, Declared, run_program, stack_outputs

KUBERNETES_STACKS = [s for s in stack_names() if load_stack(s).target == "kubernetes"]


def by_kind(declared: list[Declared], kind: str) -> list[Declared]:
    return [d for d in declared if d.typ.startswith("kubernetes:") and d.kind == kind]


def objects(declared: list[Declared]) -> list[Declared]:
    return [d for d in declared if d.typ.startswith("kubernetes:")]


def one(declared: list[Declared], kind: str) -> Declared:
    found = by_kind(declared, kind)
    assert len(found) == 1, f"expected one {kind}, got {[d.name for d in found]}"
    return found[0]


def vllm_container(declared: list[Declared]) -> dict:
    return one(declared, "StatefulSet").plain("spec")["template"]["spec"]["containers"][0]


def arg_value(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


@pytest.fixture(scope="module", params=KUBERNETES_STACKS)
def stack(request: pytest.FixtureRequest) -> tuple[str, list[Declared]]:
    return request.param, run_program(request.param)


def test_the_shipped_kubernetes_stacks_are_local_dev_and_prod() -> None:
    assert {"local", "dev", "prod"} <= set(KUBERNETES_STACKS)


def test_program_declares_exactly_the_objects_render_prints(stack: tuple[str, list[Declared]]) -> None:
    name, declared = stack
    rendered = manifests.build(load_stack(name)).all()
    declared_objects = {(d.kind, d.plain("metadata")["name"]) for d in declared if d.typ.startswith("kubernetes:")}
    assert declared_objects == {(o["kind"], o["metadata"]["name"]) for o in rendered}
    for obj in rendered:
        if obj["kind"] == "Secret":
            continue  # values differ by design: real secrets vs the redaction mark
        match = next(d for d in by_kind(declared, obj["kind"]) if d.plain("metadata")["name"] == obj["metadata"]["name"])
        for field in ("spec", "rules", "roleRef", "subjects"):
            if field in obj:
                declared_field, rendered_field = match.plain(field), _as_declared(obj[field])
                if field == "spec" and "template" in obj["spec"]:
                    # The one intended difference: a digest of real secrets vs the redaction mark.
                    for spec in (declared_field, rendered_field):
                        spec["template"]["metadata"]["annotations"].pop(manifests.SECRET_DIGEST)
                assert declared_field == rendered_field, f"{obj['kind']}.{field} differs"


def _as_declared(value):
    # Numbers cross the mock boundary as floats (protobuf); compare in that form.
    if isinstance(value, dict):
        return {k: _as_declared(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_declared(v) for v in value]
    if isinstance(value, bool) or not isinstance(value, int):
        return value
    return float(value)


def test_gpu_count_flows_to_the_gpu_limit_and_tensor_parallel_size(stack: tuple[str, list[Declared]]) -> None:
    name, declared = stack
    config = load_stack(name)
    container = vllm_container(declared)
    assert arg_value(container["args"], "--tensor-parallel-size") == str(config.tensor_parallel_size)
    resources = container["resources"]
    if config.gpu.is_cpu:
        assert "nvidia.com/gpu" not in resources["limits"]
    else:
        assert resources["limits"]["nvidia.com/gpu"] == str(config.gpu.count)
        assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"]


def test_prod_runs_the_70b_model_on_two_a100s_with_tensor_parallel_two() -> None:
    container = vllm_container(run_program("prod"))
    assert arg_value(container["args"], "--model") == "meta-llama/Llama-3.1-70B-Instruct"
    assert arg_value(container["args"], "--tensor-parallel-size") == "2"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"


def test_gpu_pods_land_on_the_gpu_pool_and_tolerate_its_taint() -> None:
    pod = one(run_program("dev"), "StatefulSet").plain("spec")["template"]["spec"]
    (term,) = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert term["matchExpressions"] == [
        {"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-A100-SXM4-80GB", "NVIDIA-A100-80GB-PCIe"]}
    ]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]


def test_secrets_are_secret_in_state_and_reach_containers_only_by_reference(stack: tuple[str, list[Declared]]) -> None:
    _, declared = stack
    secret = one(declared, "Secret")
    assert secret.is_secret("stringData")
    assert set(secret.plain("stringData")) == {"HF_TOKEN", "VLLM_API_KEY", "VLLM_WRAPPER_API_KEY"}
    for d in objects(declared):
        if d.kind in ("StatefulSet", "Deployment"):
            text = repr(d.plain("spec"))
            for value in TEST_SECRETS.values():
                assert value not in text, f"a secret value is plain in {d.name}"
            env = d.plain("spec")["template"]["spec"]["containers"][0]["env"]
            keyed = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in env if "secretKeyRef" in e.get("valueFrom", {})}
            assert keyed["VLLM_API_KEY"] == {"name": "vllm-secrets", "key": "VLLM_API_KEY"}
            assert "--api-key" not in d.plain("spec")["template"]["spec"]["containers"][0].get("args", [])


def test_selectors_match_the_pod_labels_they_select(stack: tuple[str, list[Declared]]) -> None:
    _, declared = stack
    pods = {d.kind: d.plain("spec")["template"]["metadata"]["labels"] for d in objects(declared) if d.kind in ("StatefulSet", "Deployment")}
    for d in objects(declared):
        spec = d.plain("spec") or {}
        if d.kind in ("StatefulSet", "Deployment"):
            assert spec["selector"]["matchLabels"].items() <= pods[d.kind].items()
        if d.kind == "Service":
            target = "StatefulSet" if spec["selector"]["app.kubernetes.io/component"] == "vllm" else "Deployment"
            assert spec["selector"].items() <= pods[target].items()
        if d.kind == "NetworkPolicy" and spec["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "vllm":
            assert spec["podSelector"]["matchLabels"].items() <= pods["StatefulSet"].items()
            allowed = spec["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
            assert allowed.items() <= pods["Deployment"].items(), "only the wrapper may reach vLLM"


def test_statefulset_is_governed_by_its_named_headless_service(stack: tuple[str, list[Declared]]) -> None:
    _, declared = stack
    sts = one(declared, "StatefulSet").plain("spec")
    headless = [d.plain("spec") for d in by_kind(declared, "Service") if d.plain("metadata")["name"] == sts["serviceName"]]
    assert headless and headless[0]["clusterIP"] == "None"
    assert sts["podManagementPolicy"] == "Parallel"
    assert sts["persistentVolumeClaimRetentionPolicy"]["whenScaled"] == "Retain"


def test_hpa_scales_the_wrapper_deployment(stack: tuple[str, list[Declared]]) -> None:
    name, declared = stack
    config = load_stack(name)
    hpa = one(declared, "HorizontalPodAutoscaler").plain("spec")
    deployment = one(declared, "Deployment").plain("metadata")["name"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment}
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (config.wrapper.replicas.min, config.wrapper.replicas.max)


def test_probes_use_open_health_and_survive_a_cold_download(stack: tuple[str, list[Declared]]) -> None:
    name, _ = stack
    container = vllm_container(stack[1])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/health", "never /v1/*, which needs the key"
    startup = container["startupProbe"]
    window = startup["periodSeconds"] * startup["failureThreshold"]
    config = load_stack(name)
    assert window >= serving_plan(config).startup_budget_seconds >= 600
    if name == "prod":  # 131 GiB of weights at 100 MiB/s is ~22 minutes of download alone
        assert window >= 25 * 60


def test_pulumi_waits_as_long_as_the_startup_probe_would(stack: tuple[str, list[Declared]]) -> None:
    name, declared = stack
    config = load_stack(name)
    sts = one(declared, "StatefulSet")
    timeouts = sts.opts.custom_timeouts
    assert int(timeouts.create.rstrip("m")) * 60 > serving_plan(config).startup_budget_seconds
    assert timeouts.update == timeouts.create


def test_pulumi_up_leaves_replica_counts_to_their_owners(stack: tuple[str, list[Declared]]) -> None:
    name, declared = stack
    # The HPA owns the wrapper's count; with an idle timeout the wrapper owns vLLM's.
    assert one(declared, "Deployment").opts.ignore_changes == ["spec.replicas"]
    expected = ["spec.replicas"] if load_stack(name).scales_to_zero else []
    assert (one(declared, "StatefulSet").opts.ignore_changes or []) == expected


def test_a_stack_that_names_a_kube_context_deploys_only_there() -> None:
    declared = run_program("dev", overrides={"kubernetes": {"namespace": "vllm-dev", "context": "gpu-cluster"}})
    (provider,) = [d for d in declared if d.typ == "pulumi:providers:kubernetes"]
    assert provider.inputs["context"] == "gpu-cluster"
    for d in objects(declared):
        assert d.provider and d.provider.startswith(f"urn:pulumi:dev::vllm-deploy::") and "::" + provider.name + "::" in d.provider
    assert not [d for d in run_program("dev") if d.typ == "pulumi:providers:kubernetes"]


def test_rotating_a_secret_rolls_the_pods_that_read_it_without_hiding_the_spec() -> None:
    def digests(secrets: dict[str, str]) -> set[str]:
        declared = run_program("dev", secrets=secrets)
        found = set()
        for kind in ("StatefulSet", "Deployment"):
            workload = one(declared, kind)
            assert not workload.is_secret("spec"), "a secret spec would hide every diff in `pulumi preview`"
            found.add(workload.plain("spec")["template"]["metadata"]["annotations"][manifests.SECRET_DIGEST])
        return found

    before = digests(TEST_SECRETS)
    assert len(before) == 1 and len(next(iter(before))) == 64
    assert digests({**TEST_SECRETS, "vllmApiKey": "rotated-key"}) != before
    assert digests(TEST_SECRETS) == before
    assert not any(value in next(iter(before)) for value in TEST_SECRETS.values())


def test_graceful_drain_fits_inside_the_grace_period(stack: tuple[str, list[Declared]]) -> None:
    name, declared = stack
    pod = one(declared, "StatefulSet").plain("spec")["template"]["spec"]
    sleep = int(pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["terminationGracePeriodSeconds"] >= sleep + load_stack(name).vllm.shutdown_timeout


def test_model_cache_survives_scaling_to_zero_and_shm_grows_with_tensor_parallelism() -> None:
    for name in ("dev", "prod"):
        sts = one(run_program(name), "StatefulSet").plain("spec")
        claim = sts["volumeClaimTemplates"][0]
        mounts = {m["name"]: m["mountPath"] for m in sts["template"]["spec"]["containers"][0]["volumeMounts"]}
        assert mounts[claim["metadata"]["name"]] == manifests.CACHE_MOUNT
        env = {e["name"]: e.get("value") for e in sts["template"]["spec"]["containers"][0]["env"]}
        assert env["HF_HOME"].startswith(manifests.CACHE_MOUNT)
        shm = next(v for v in sts["template"]["spec"]["volumes"] if v["name"] == "dshm")["emptyDir"]
        assert shm["medium"] == "Memory"
    prod_shm = one(run_program("prod"), "StatefulSet").plain("spec")["template"]["spec"]["volumes"][0]["emptyDir"]
    assert prod_shm["sizeLimit"] == "16Gi"


def test_images_are_pinned(stack: tuple[str, list[Declared]]) -> None:
    _, declared = stack
    for d in objects(declared):
        if d.kind in ("StatefulSet", "Deployment"):
            image = d.plain("spec")["template"]["spec"]["containers"][0]["image"]
            assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest")


def test_scale_to_zero_rbac_only_where_an_idle_timeout_is_set() -> None:
    dev = run_program("dev")
    role = one(dev, "Role").plain("rules")
    assert role == [  # no patch on the StatefulSet: it could rewrite the pod template
        {"apiGroups": ["apps"], "resources": ["statefulsets"], "resourceNames": ["vllm"], "verbs": ["get"]},
        {"apiGroups": ["apps"], "resources": ["statefulsets/scale"], "resourceNames": ["vllm"], "verbs": ["get", "patch"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["vllm-activity"],
         "verbs": ["get", "patch"]},
    ]
    assert one(dev, "Lease").plain("metadata")["name"] == "vllm-activity"
    assert one(dev, "Deployment").plain("spec")["template"]["spec"]["serviceAccountName"] == "vllm-scaler"
    prod = run_program("prod")
    assert not by_kind(prod, "Role") and not by_kind(prod, "ServiceAccount")
    assert one(prod, "Deployment").plain("spec")["template"]["spec"]["automountServiceAccountToken"] is False


def test_components_parent_their_children() -> None:
    declared = run_program("dev")
    types = {d.typ for d in declared}
    assert {
        "vllm-deploy:kubernetes:Deployment",
        "vllm-deploy:kubernetes:VllmServer",
        "vllm-deploy:kubernetes:Wrapper",
    } <= types


def test_stack_outputs_tell_the_user_how_to_reach_the_wrapper() -> None:
    outputs = stack_outputs("dev")
    assert outputs["port_forward"] == "kubectl port-forward -n vllm-dev svc/vllm-wrapper 8001:8001"
    assert outputs["openai_base_url"] == "http://localhost:8001/v1"
    assert outputs["in_cluster_url"] == "http://vllm-wrapper.vllm-dev.svc.cluster.local:8001"
    assert outputs["served_model"] == "llama-3.1-8b-instruct"
    assert outputs["scale_to_zero_after_seconds"] == 900


def test_a_missing_secret_stops_the_program_before_any_resource() -> None:
    with pytest.raises(pulumi.RunError, match=r"vllmApiKey: required"):
        run_program("dev", secrets={"hfToken": "x"})
    with pytest.raises(pulumi.RunError, match=r"hfToken: required for the gated model"):
        run_program("prod", secrets={"vllmApiKey": "x"})


def test_a_model_that_does_not_fit_stops_the_program_with_the_count_that_fits() -> None:
    with pytest.raises(pulumi.RunError) as error:
        run_program("prod", overrides={"gpu": {"type": "A100-80GB", "count": 1}})
    assert "gpu.count" in str(error.value) and "Set gpu.count: 2" in str(error.value)


def test_largest_stack_startup_budget_is_whole_minutes() -> None:
    assert math.isclose(serving_plan(load_stack("prod")).startup_budget_seconds % 60, 0)
