"""Rendering charts/vllm-deploy with the real Helm engine, and comparing it with manifests.py.

`helm-python-sdk` (import `helm_python`) bundles Helm v4's Go SDK; rendering is `helm template`
without the binary or a cluster.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import helm_python
import yaml

from components.config import StackConfig

CHART_DIR = Path(__file__).resolve().parents[2] / "charts" / "vllm-deploy"
NOTES = "vllm-deploy/templates/NOTES.txt"
# The only value the chart requires.
MINIMAL = {"model": {"id": "Qwen/Qwen2.5-7B-Instruct"}}

# What Helm adds and Pulumi does not, or the reverse: removed before comparing.
HELM_ONLY_LABELS = ("helm.sh/chart", "app.kubernetes.io/managed-by")
CHART_ONLY_ANNOTATION_PREFIX = "checksum/"
SECRET_VALUE = "<compared by key only>"

Manifest = dict[str, Any]


def render(chart: helm_python.Chart, values: dict[str, Any], release: str, namespace: str) -> dict[str, str]:
    """`helm template RELEASE -n NAMESPACE` of the chart: template path → rendered text."""
    return chart.render(values, name=release, namespace=namespace)


def objects(rendered: dict[str, str]) -> list[Manifest]:
    """The Kubernetes objects of a render (NOTES.txt and empty documents left out)."""
    found: list[Manifest] = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        found.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return found


def render_stack(chart: helm_python.Chart, values: dict[str, Any], config: StackConfig) -> list[Manifest]:
    """Render as the stack's release: name `kubernetes.releaseName`, namespace `kubernetes.namespace`."""
    return objects(render(chart, values, config.kubernetes.release_name, config.kubernetes.namespace))


def identity(obj: Manifest) -> str:
    meta = obj.get("metadata", {})
    return f"{obj.get('kind')}/{meta.get('namespace', '-')}/{meta.get('name')}"


def normalise(objs: list[Manifest]) -> list[Manifest]:
    """Objects from either side in a form where equal means "the same deployment".

    The normalisation, and nothing more:
    - document order: sorted by kind, namespace and name (neither Helm nor Pulumi order matters);
      key order never matters (dicts compare unordered); list order is kept (args, env, ports);
    - in every `metadata` (objects, pod templates, claim templates): the labels Helm and Pulumi set
      about themselves, `helm.sh/chart` and `app.kubernetes.io/managed-by` (Helm vs pulumi), are
      dropped, as are the chart's `checksum/*` annotations (they roll pods on config changes);
      an annotations map left empty is dropped;
    - Secrets: `data` and `stringData` merge into `stringData` with every value replaced by one
      marker, so Secrets are compared by key only (Pulumi renders REDACTED, a chart real values);
    - `spec.replicas` of a workload another controller scales (the HPA's Deployment; with
      scale-to-zero the StatefulSet the scaler Role may patch) is dropped: Pulumi sets it on create
      and ignores it after (ignore_changes), the chart leaves it out so an upgrade never resets it.
    """
    result = [copy.deepcopy(obj) for obj in objs]
    scaled = _scaled_by_others(result)
    for obj in result:
        _clean_metadata(obj)
        if (obj.get("kind"), obj.get("metadata", {}).get("name")) in scaled:
            obj["spec"].pop("replicas", None)
        if obj.get("kind") == "Secret":
            keys = {**(obj.pop("data", None) or {}), **(obj.get("stringData") or {})}
            obj["stringData"] = {key: SECRET_VALUE for key in keys}
    return sorted(result, key=identity)


def _scaled_by_others(objs: list[Manifest]) -> set[tuple[str, str]]:
    scaled = set()
    for obj in objs:
        if obj.get("kind") == "HorizontalPodAutoscaler":
            target = obj["spec"]["scaleTargetRef"]
            scaled.add((target["kind"], target["name"]))
        if obj.get("kind") == "Role":
            for rule in obj["rules"]:
                if "statefulsets/scale" in rule["resources"] and "patch" in rule["verbs"]:
                    scaled |= {("StatefulSet", name) for name in rule.get("resourceNames", [])}
    return scaled


def _clean_metadata(node: Any) -> None:
    if isinstance(node, list):
        for item in node:
            _clean_metadata(item)
        return
    if not isinstance(node, dict):
        return
    meta = node.get("metadata")
    if isinstance(meta, dict):
        labels = meta.get("labels")
        if isinstance(labels, dict):
            for label in HELM_ONLY_LABELS:
                labels.pop(label, None)
        annotations = meta.get("annotations")
        if isinstance(annotations, dict):
            for key in [k for k in annotations if k.startswith(CHART_ONLY_ANNOTATION_PREFIX)]:
                del annotations[key]
            if not annotations:
                del meta["annotations"]
    for value in node.values():
        _clean_metadata(value)


def differences(chart: list[Manifest], pulumi: list[Manifest]) -> list[str]:
    """Readable differences between two normalised object lists; empty when they are the same."""
    found: list[str] = []
    left = {identity(o): o for o in chart}
    right = {identity(o): o for o in pulumi}
    for key in sorted(left.keys() - right.keys()):
        found.append(f"{key}: only in the chart")
    for key in sorted(right.keys() - left.keys()):
        found.append(f"{key}: only in manifests.py")
    for key in sorted(left.keys() & right.keys()):
        _diff(left[key], right[key], key, "", found)
    return found


def _diff(a: Any, b: Any, obj: str, path: str, found: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(a.keys() | b.keys()):
            where = f"{path}.{key}" if path else key
            if key not in b:
                found.append(f"{obj}: {where}: only in the chart ({a[key]!r})")
            elif key not in a:
                found.append(f"{obj}: {where}: only in manifests.py ({b[key]!r})")
            else:
                _diff(a[key], b[key], obj, where, found)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            _diff(x, y, obj, f"{path}[{i}]", found)
    elif a != b or type(a) is not type(b):
        found.append(f"{obj}: {path}: chart {a!r} != manifests.py {b!r}")
