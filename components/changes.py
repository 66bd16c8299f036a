"""What a change to a stack does to the objects already in a cluster: update or replace.

`compare(before, after)` reads two renders of the same stack (`manifests.build(...).all()`, or the
YAML `vllm-deploy render` printed) the way pulumi-kubernetes diffs them: a change to one of its
force-new fields replaces the object, and a named object is deleted before its replacement is
created (provider/pkg/provider/diff.go `forceNew`, provider.go `deleteBeforeReplace`); any other
change is an update, which the API server accepts only where Kubernetes lets the field change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from components.manifests import Manifest

# pulumi-kubernetes provider/pkg/provider/diff.go (v4): the fields whose change replaces an object,
# for the kinds this project declares (every kind also: .metadata.name, .metadata.namespace).
FORCE_NEW: dict[str, tuple[str, ...]] = {
    "StatefulSet": (
        "spec.podManagementPolicy",
        "spec.revisionHistoryLimit",
        "spec.selector",
        "spec.serviceName",
        "spec.volumeClaimTemplates",
    ),
    "Deployment": ("spec.selector",),
    "Service": ("spec.clusterIP",),
    "Secret": ("type",),
    "PersistentVolumeClaim": ("spec.accessModes", "spec.selector", "spec.storageClassName", "spec.volumeName"),
    "RoleBinding": ("roleRef",),
}
# Kubernetes' StatefulSet validation (pkg/apis/apps/validation ValidateStatefulSetUpdate): an update
# may change only these spec fields; any other is rejected ("updates to statefulset spec for
# fields other than ... are forbidden").
STATEFULSET_UPDATABLE = (
    "spec.replicas", "spec.template", "spec.updateStrategy",
    "spec.persistentVolumeClaimRetentionPolicy", "spec.minReadySeconds", "spec.ordinals",
)  # fmt: skip
# Deployment and Service selectors may not change in place either (apps/v1 Deployment
# `spec.selector` is immutable; a Service's clusterIP is).
IMMUTABLE: dict[str, tuple[str, ...]] = {"Deployment": ("spec.selector",), "Service": ("spec.clusterIP",)}


def _at(obj: Manifest, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)  # type: ignore[assignment]
    return obj


def _identity(obj: Manifest) -> tuple[str, str, str]:
    return obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


def _changed_spec_fields(before: Manifest, after: Manifest) -> list[str]:
    keys = sorted(set(before.get("spec", {})) | set(after.get("spec", {})))
    return [f"spec.{k}" for k in keys if before.get("spec", {}).get(k) != after.get("spec", {}).get(k)]


@dataclass(frozen=True)
class Change:
    kind: str
    name: str
    action: str  # "create", "delete", "update", "replace"
    fields: tuple[str, ...] = ()  # for replace: the force-new fields that changed
    rejected: tuple[str, ...] = ()  # for update: fields the API server would refuse to change

    def describe(self) -> str:
        what = f"{self.kind}/{self.name}: {self.action}"
        if self.fields:
            what += f" ({', '.join(self.fields)})"
        if self.rejected:
            what += f" — the API server rejects a change to {', '.join(self.rejected)}"
        return what


def compare(before: list[Manifest], after: list[Manifest]) -> list[Change]:
    old = {_identity(o): o for o in before}
    new = {_identity(o): o for o in after}
    changes = [Change(k, n, "delete") for (k, _, n) in old.keys() - new.keys()]
    changes += [Change(k, n, "create") for (k, _, n) in new.keys() - old.keys()]
    for key in sorted(old.keys() & new.keys()):
        a, b = old[key], new[key]
        if a == b:
            continue
        kind, _, name = key
        forced = tuple(f for f in FORCE_NEW.get(kind, ()) if _at(a, f) != _at(b, f))
        if forced:
            changes.append(Change(kind, name, "replace", forced))
            continue
        changed = _changed_spec_fields(a, b)
        if kind == "StatefulSet":
            rejected = tuple(f for f in changed if f not in STATEFULSET_UPDATABLE)
        else:
            rejected = tuple(f for f in IMMUTABLE.get(kind, ()) if f in changed)
        changes.append(Change(kind, name, "update", rejected=rejected))
    return sorted(changes, key=lambda c: (c.kind, c.name))


def consequences(before: list[Manifest], after: list[Manifest]) -> list[str]:
    """What `vllm-deploy check --previous` says a change does, one line each."""
    lines = []
    for change in compare(before, after):
        lines.append(change.describe())
        if change.kind == "StatefulSet" and change.action == "replace":
            claims = [c["metadata"]["name"] for c in _at(_find(after, change), "spec.volumeClaimTemplates") or []]
            lines.append(
                "  vLLM is deleted before its replacement is created: it stops serving until the new pod is ready;"
                f" the new pods get new claims ({', '.join(claims)}), which start empty and download the model again;"
                " the old claims are retained (whenDeleted: Retain) until you delete them"
            )
    return lines


def _find(objects: list[Manifest], change: Change) -> Manifest:
    return next(o for o in objects if o["kind"] == change.kind and o["metadata"]["name"] == change.name)
