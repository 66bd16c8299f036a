"""`vllm-deploy preflight STACK` against recorded API answers of GKE and EKS clusters.

The stand-in kubectl (kubectl_standin.py) serves `kubectl get -o json` answers of the shape
a real API server returns (fixtures/*.json) and kubectl's own error texts; nothing here has
been run against a live cluster.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from components.preflight import _resource_of
from components.stackfile import load_stack
from components.targets import target_of
from tests.preflight.conftest import (
    EKS_CONTEXT,
    GKE_CONTEXT,
    Preflight,
    by_name,
    eks_karpenter_cluster,
    gke_cluster,
)

REPO = Path(__file__).resolve().parents[2]
READ_ONLY = ({"get"}, {"auth", "can-i"}, {"config", "current-context"})


def verb_of(call: list[str]) -> list[str]:
    """The kubectl verb (and sub-verb) of a recorded call, global flags left out."""
    words, rest = [], iter(call)
    for arg in rest:
        if arg == "--context":
            next(rest)
        elif not arg.startswith("-"):
            words.append(arg)
    return words[:2] if words[0] in ("auth", "config") else words[:1]


def assert_read_only(calls: list[list[str]]) -> None:
    assert calls
    for call in calls:
        verb = verb_of(call)
        assert set(verb) in READ_ONLY, f"preflight ran a non-read verb: kubectl {' '.join(call)}"
        if verb == ["auth", "can-i"]:
            assert "--as" not in call  # asks for the caller, impersonates no one


def write_stack(tmp_path: Path, name: str, kubernetes: str) -> Path:
    stacks = tmp_path / "stacks"
    stacks.mkdir(exist_ok=True)
    (stacks / f"Pulumi.{name}.yaml").write_text(
        "config:\n"
        "  vllm-deploy:target: kubernetes\n"
        "  vllm-deploy:model:\n    id: meta-llama/Llama-3.1-8B-Instruct\n    servedName: llama-3.1-8b-instruct\n"
        "  vllm-deploy:gpu:\n    type: A100-80GB\n    count: 1\n"
        "  vllm-deploy:kubernetes:\n" + kubernetes
    )
    return stacks


def karpenter_stack(tmp_path: Path, storage: str = "") -> Path:
    """The stack an EKS + Karpenter user writes: select on a label Karpenter sets at launch."""
    return write_stack(
        tmp_path,
        "eks",
        f"    context: {EKS_CONTEXT}\n"
        "    namespace: vllm-dev\n"
        "    nodeSelector:\n      karpenter.k8s.aws/instance-gpu-name: a100\n"
        + (f"    cache:\n      storageClass: {storage}\n" if storage else ""),
    )


# --------------------------------------------------------------- all pass


def test_every_check_passes_on_a_ready_gke_gpu_cluster(preflight: Preflight) -> None:
    code, report = preflight.json("dev")
    assert code == 0, report
    assert report["ok"] is True
    assert report["context"] == GKE_CONTEXT  # the dev stack names none: the current one
    checks = by_name(report)
    assert list(checks) == ["context", "gpu-nodes", "device-plugin", "storage", "pod-security", "image", "rbac"]
    assert {name: c["status"] for name, c in checks.items()} == {
        "context": "pass", "gpu-nodes": "pass", "device-plugin": "pass", "storage": "pass",
        "pod-security": "pass", "image": "skip", "rbac": "pass",
    }
    assert "v1.30.5-gke.1014001" in checks["context"]["detail"]
    assert "nvidia.com/gpu.product=NVIDIA-A100-SXM4-80GB" in checks["gpu-nodes"]["detail"]
    assert "gke-gpu-cluster-a100-pool-7d1f3c9e-2mzp" in checks["gpu-nodes"]["detail"]
    assert "gpu-operator/nvidia-device-plugin-daemonset: 1 of 1" in checks["device-plugin"]["detail"]
    assert "default StorageClass standard-rwo" in checks["storage"]["detail"]
    assert "enforces 'baseline'" in checks["pod-security"]["detail"]
    # Honest about what it cannot know: no registry was asked.
    assert "contacts no registry" in checks["image"]["detail"]
    assert_read_only(preflight.calls())


@pytest.mark.parametrize("cluster", [gke_cluster, eks_karpenter_cluster], ids=["passes", "fails"])
def test_the_console_script_answers_as_the_in_process_runs_do(tmp_path: Path, cluster) -> None:
    """The other tests run the command in-process (tests/support/cli.py); the process says the same."""
    runs = [Preflight(tmp_path / kind, cluster(), as_process=kind == "process") for kind in ("process", "in-process")]
    for run in runs:
        run.tmp_path.mkdir()
    process, in_process = (run.run("dev") for run in runs)
    assert (process.returncode, process.stdout, process.stderr) == (
        in_process.returncode, in_process.stdout, in_process.stderr)
    assert process.stdout and runs[0].calls() == runs[1].calls()


def test_rbac_asks_can_i_create_for_every_kind_the_stack_renders(preflight: Preflight) -> None:
    config = load_stack("dev")
    expected = {
        ("create", _resource_of(o), *(["--namespace", o["metadata"]["namespace"]] if "namespace" in o["metadata"] else []))
        for o in target_of(config).objects(config)
    }
    assert preflight.run("dev").returncode == 0
    asked = {tuple(c[2:-1]) for c in preflight.calls() if c[:2] == ["auth", "can-i"]}
    assert asked == expected
    # The kinds are the rendered ones, named as the API server groups them.
    assert ("create", "statefulsets.apps", "--namespace", "vllm-dev") in asked
    assert ("create", "networkpolicies.networking.k8s.io", "--namespace", "vllm-dev") in asked
    assert ("create", "namespaces") in asked


def test_text_report_has_a_line_per_check_and_the_fix_under_a_failure(preflight: Preflight) -> None:
    preflight.cluster["answers"]["get namespace vllm-dev"] = "namespace-vllm-dev-restricted.json"
    done = preflight.run("dev")
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert lines[0] == f"preflight dev on {GKE_CONTEXT}"
    assert [line.split()[0] for line in lines[1:] if not line.strip().startswith("fix:")][:7] == [
        "PASS", "PASS", "PASS", "PASS", "FAIL", "SKIP", "PASS",
    ]
    failure = next(i for i, line in enumerate(lines) if line.lstrip().startswith("FAIL"))
    assert "fix: `kubectl label namespace vllm-dev pod-security.kubernetes.io/enforce=baseline --overwrite`" in lines[failure + 1]
    assert lines[-1] == "FAILED: 5 passed, 0 warned, 1 failed"


# --------------------------------------------------------------- context


def test_unreachable_context_fails_and_runs_no_other_check(preflight: Preflight) -> None:
    preflight.cluster["unreachable"] = True
    code, report = preflight.json("dev")
    assert code == 1
    assert [c["name"] for c in report["checks"]] == ["context"]
    check = report["checks"][0]
    assert check["status"] == "fail"
    assert "Unable to connect to the server: dial tcp 34.118.224.1:443: i/o timeout" in check["detail"]
    assert "kubernetes.context" in check["fix"]


def test_a_context_the_kubeconfig_lacks_fails(preflight: Preflight) -> None:
    code, report = preflight.json("dev", "--context", "gke_old-project_europe-west4_gone")
    assert code == 1
    assert report["context"] == "gke_old-project_europe-west4_gone"
    assert 'context "gke_old-project_europe-west4_gone" does not exist' in report["checks"][0]["detail"]


def test_the_stack_files_context_is_used_on_every_call(preflight: Preflight, tmp_path: Path) -> None:
    preflight.cluster = eks_karpenter_cluster()
    preflight.cluster["current_context"] = "kind-kind"  # the current one is another cluster
    code, report = preflight.json("eks", stacks_dir=karpenter_stack(tmp_path, storage="gp2"))
    assert report["context"] == EKS_CONTEXT
    cluster_calls = [c for c in preflight.calls() if c[:2] != ["config", "current-context"]]
    assert cluster_calls and all(c[:2] == ["--context", EKS_CONTEXT] for c in cluster_calls)
    assert code == 0, report


# --------------------------------------------------------------- GPU nodes


def test_no_gpu_node_and_no_autoscaler_fails(preflight: Preflight) -> None:
    preflight.cluster["answers"]["get nodes"] = "nodes-gke-cpu-only.json"
    code, report = preflight.json("dev")
    assert code == 1
    check = by_name(report)["gpu-nodes"]
    assert check["status"] == "fail"
    assert "no node carries nvidia.com/gpu.product=NVIDIA-A100-SXM4-80GB" in check["detail"]
    assert "kubernetes.nodeSelector" in check["fix"]


def test_gpu_nodes_whose_taint_vllm_does_not_tolerate_fail(preflight: Preflight, tmp_path: Path) -> None:
    # GKE taints GPU nodes nvidia.com/gpu=present:NoSchedule; `tolerations: []` drops the default toleration.
    stacks = write_stack(tmp_path, "untolerant", "    namespace: vllm-dev\n    tolerations: []\n")
    code, report = preflight.json("untolerant", stacks_dir=stacks)
    check = by_name(report)["gpu-nodes"]
    assert check["status"] == "fail"
    assert "taint vLLM does not tolerate: nvidia.com/gpu=present:NoSchedule" in check["detail"]
    assert "kubernetes.tolerations" in check["fix"]
    assert code == 1


def test_a_karpenter_nodepool_that_can_launch_the_node_warns_scale_from_zero(preflight: Preflight, tmp_path: Path) -> None:
    preflight.cluster = eks_karpenter_cluster()
    code, report = preflight.json("eks", stacks_dir=karpenter_stack(tmp_path, storage="gp2"))
    check = by_name(report)["gpu-nodes"]
    assert check["status"] == "warn"
    assert "Karpenter NodePool(s) gpu-a100 can launch one (scale from zero)" in check["detail"]
    assert code == 0, report  # a warning is not a failure


def test_a_gfd_label_karpenter_cannot_promise_fails(preflight: Preflight) -> None:
    # nvidia.com/gpu.product is set by GPU feature discovery once a node runs: no NodePool
    # sets or constrains it, so Karpenter will never launch a node for this selector
    # (karpenter.sh docs, "Scheduling: Well-Known Labels"; issue 12, day 1 point 1).
    preflight.cluster = eks_karpenter_cluster()
    preflight.cluster["contexts"].append(GKE_CONTEXT)
    preflight.cluster["current_context"] = GKE_CONTEXT
    code, report = preflight.json("dev")
    assert code == 1
    assert by_name(report)["gpu-nodes"]["status"] == "fail"


def test_a_gpu_pool_at_zero_behind_the_cluster_autoscaler_warns(preflight: Preflight) -> None:
    preflight.cluster["answers"]["get nodes"] = "nodes-gke-cpu-only.json"
    preflight.cluster["answers"]["get daemonsets --all-namespaces"] = "daemonsets-gpu-operator-no-gpu-node.json"
    preflight.cluster["answers"]["get configmap cluster-autoscaler-status --namespace kube-system"] = (
        "configmap-cluster-autoscaler-status.json"
    )
    code, report = preflight.json("dev")
    check = by_name(report)["gpu-nodes"]
    assert check["status"] == "warn"
    assert "gke-gpu-cluster-a100-pool-7d1f3c9e-grp" in check["detail"]
    assert "cannot see the labels" in check["detail"]
    # With the pool at zero the device plugin runs nowhere yet; that is not a failure.
    assert by_name(report)["device-plugin"]["status"] == "pass"
    assert "on no node yet" in by_name(report)["device-plugin"]["detail"]
    assert code == 0, report


# --------------------------------------------------------------- device plugin


def test_no_device_plugin_fails(preflight: Preflight) -> None:
    preflight.cluster["answers"]["get nodes"] = "nodes-gke-gpu-no-plugin.json"
    preflight.cluster["answers"]["get daemonsets --all-namespaces"] = "daemonsets-system-only.json"
    code, report = preflight.json("dev")
    assert code == 1
    check = by_name(report)["device-plugin"]
    assert check["status"] == "fail"
    assert "no node advertises nvidia.com/gpu" in check["detail"]
    assert "gpu-operator" in check["fix"]


def test_nodes_advertising_gpus_pass_without_a_visible_daemonset(preflight: Preflight) -> None:
    # GKE's own plugin, or one the caller may not list: the node's allocatable is the proof.
    preflight.cluster["answers"]["get daemonsets --all-namespaces"] = {"error": "forbidden"}
    code, report = preflight.json("dev")
    check = by_name(report)["device-plugin"]
    assert check["status"] == "pass"
    assert "1 node(s) advertise nvidia.com/gpu" in check["detail"]
    assert code == 0


def test_the_cpu_local_stack_skips_the_device_plugin(preflight: Preflight) -> None:
    preflight.cluster["answers"]["get nodes"] = "nodes-gke-cpu-only.json"
    preflight.cluster["answers"]["get daemonsets --all-namespaces"] = "daemonsets-system-only.json"
    code, report = preflight.json("local")
    checks = by_name(report)
    assert checks["device-plugin"]["status"] == "skip"
    assert checks["gpu-nodes"]["status"] == "pass"
    assert "does not exist yet; the stack creates it" in checks["pod-security"]["detail"]
    assert code == 0, report


# --------------------------------------------------------------- storage


def test_a_storage_class_the_cluster_lacks_fails(preflight: Preflight) -> None:
    preflight.cluster["answers"]["get storageclasses"] = "storageclasses-eks.json"
    code, report = preflight.json("prod")  # names premium-rwo, a GKE class
    assert code == 1
    check = by_name(report)["storage"]
    assert check["status"] == "fail"
    assert check["detail"] == "StorageClass premium-rwo does not exist; classes: gp2"
    assert "kubernetes.cache.storageClass" in check["fix"]


def test_no_default_storage_class_on_eks_fails_when_the_stack_names_none(preflight: Preflight, tmp_path: Path) -> None:
    # EKS >= 1.30 creates gp2 without the is-default-class annotation
    # (docs.aws.amazon.com/eks/latest/userguide/kubernetes-versions-standard.html, "Kubernetes 1.30").
    preflight.cluster = eks_karpenter_cluster()
    code, report = preflight.json("eks", stacks_dir=karpenter_stack(tmp_path))
    assert code == 1
    check = by_name(report)["storage"]
    assert check["status"] == "fail"
    assert "no default one" in check["detail"] and "classes: gp2" in check["detail"]
    assert "storageclass.kubernetes.io/is-default-class=true" in check["fix"]


def test_a_named_storage_class_that_exists_passes(preflight: Preflight) -> None:
    code, report = preflight.json("prod")
    assert by_name(report)["storage"] == {
        "name": "storage", "status": "pass", "detail": "StorageClass premium-rwo exists", "fix": "", "ok": True,
    }
    assert code == 0, report


# --------------------------------------------------------------- Pod Security


def test_a_restricted_namespace_fails_for_vllm_running_as_root(preflight: Preflight) -> None:
    preflight.cluster["answers"]["get namespace vllm-dev"] = "namespace-vllm-dev-restricted.json"
    code, report = preflight.json("dev")
    assert code == 1
    check = by_name(report)["pod-security"]
    assert check["status"] == "fail"
    assert "enforces Pod Security 'restricted'; the stack's pods need 'baseline'" in check["detail"]
    assert "root" in check["detail"]
    assert "pod-security.kubernetes.io/enforce=baseline" in check["fix"]


# --------------------------------------------------------------- image


def test_pull_failures_the_cluster_reports_warn(preflight: Preflight, tmp_path: Path) -> None:
    config = load_stack("dev")
    image = config.wrapper.image
    recorded = (Path(__file__).parent / "fixtures" / "events-image-pull-failure.json").read_text()
    fixture = Path(__file__).parent / "fixtures" / "events-image-pull-failure.json"
    assert image in recorded, "the recorded events name the dev stack's wrapper image"
    preflight.cluster["answers"]["get events --namespace vllm-dev"] = fixture.name
    code, report = preflight.json("dev")
    check = by_name(report)["image"]
    assert check["status"] == "warn"
    assert f'Failed to pull image "{image}"' in check["detail"]
    assert "wrapper.image" in check["fix"]
    assert code == 0


# --------------------------------------------------------------- RBAC


def test_rbac_denied_fails_naming_each_kind(preflight: Preflight) -> None:
    preflight.cluster["can_i"] = {
        "create statefulsets.apps --namespace vllm-dev": "no",
        "create roles.rbac.authorization.k8s.io --namespace vllm-dev": "no",
    }
    code, report = preflight.json("dev")
    assert code == 1
    check = by_name(report)["rbac"]
    assert check["status"] == "fail"
    assert check["detail"] == (
        "you may not create statefulsets.apps in vllm-dev; create roles.rbac.authorization.k8s.io in vllm-dev"
    )
    assert_read_only(preflight.calls())


# --------------------------------------------------------------- read-only, always


@pytest.mark.parametrize(
    "change",
    [
        {},
        {"unreachable": True},
        {"can_i": {"create secrets --namespace vllm-dev": "no"}},
        {"answers": {"get --raw /version": "version-gke.json", "get namespace vllm-dev": "namespace-vllm-dev-restricted.json"}},
    ],
)
def test_preflight_never_runs_a_mutating_kubectl_verb(preflight: Preflight, change: dict) -> None:
    preflight.cluster.update(change)
    preflight.run("dev")
    assert_read_only(preflight.calls())


def test_a_modal_stack_has_no_cluster_to_check(preflight: Preflight) -> None:
    done = preflight.run("modal-dev")
    assert done.returncode == 2
    assert "targets modal" in done.stderr
    assert not preflight.log.exists()
