"""A recording fake of the `ModalClient` seam: the one fake in these tests (Modal's servers
cannot be reached from here). Calls are kept in memory and, when `record_path` is set,
appended to a JSON-lines file (for the provider host, which runs in another process)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from components.modal_app import AppSpec
from components.modal_target import Deployed


@dataclass
class RecordingModalClient:
    record_path: str | None = None
    workspace: str = "acme"
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    # Named secrets in the workspace, as Modal keeps them (create fails on an existing name).
    secrets: dict[str, dict[str, str]] = field(default_factory=dict)

    def _record(self, method: str, **args: Any) -> None:
        self.calls.append((method, args))
        if self.record_path:
            with open(self.record_path, "a") as handle:
                handle.write(json.dumps({"method": method, **args}, default=str) + "\n")

    async def upsert_secret(self, name: str, values: Mapping[str, str]) -> bool:
        self._record("upsert_secret", name=name, values=dict(values))
        created = name not in self.secrets
        self.secrets[name] = dict(values)
        return created

    async def delete_secret(self, name: str) -> None:
        self._record("delete_secret", name=name)
        self.secrets.pop(name, None)

    async def deploy(self, spec: AppSpec) -> Deployed:
        self._record("deploy", spec=spec.to_dict())
        urls = {
            fn: f"https://{self.workspace}--{spec.app_name}-{fn.replace('_', '-')}.modal.run"
            for fn in spec.web_functions
        }
        return Deployed(app_id=f"ap-{spec.digest[:10]}", urls=urls)

    async def predownload(self, spec: AppSpec) -> None:
        self._record("predownload", app_name=spec.app_name, model=spec.model_id, revision=spec.model_revision)

    async def stop(self, app_name: str) -> None:
        self._record("stop", app_name=app_name)

    def methods(self) -> list[str]:
        return [method for method, _ in self.calls]
