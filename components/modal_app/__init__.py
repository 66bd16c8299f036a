"""The Modal app definitions: vLLM on Modal GPUs, declared from a typed `AppSpec`.

- `integrated.py`: vLLM's OpenAI server as one GPU web endpoint (`serve_vllm`).
- `autoscale.py`: the project's own `wrapper/` always on, on CPU (`serve_wrapper`), in front
  of a GPU web endpoint running vLLM that scales to zero (`serve_vllm`).

`load_app(spec)` imports the module for the spec's architecture with that spec and
returns it (its `app` is a `modal.App`). The same module is imported again inside each
Modal container, where the spec comes from the environment (see `spec.py`).

Standard library only at import time: this package runs inside the Modal containers.
"""

from __future__ import annotations

import hashlib
import importlib
import sys
import threading
import tomllib
from pathlib import Path
from types import ModuleType

from components.modal_app import spec as _spec
from components.modal_app.spec import AppSpec, SpecError

MODULES = {"integrated": "components.modal_app.integrated", "autoscale": "components.modal_app.autoscale"}
# The wrapper's ASGI app factory, imported only inside the Modal wrapper container.
WRAPPER_FACTORY = "wrapper.app:create_app"
WRAPPER_PACKAGE = "wrapper"

_HERE = Path(__file__).resolve().parent
REPO_ROOT = _HERE.parent.parent
_LOCK = threading.Lock()

__all__ = ["AppSpec", "SpecError", "load_app", "source_files", "source_hash", "wrapper_requirements"]


def load_app(spec: AppSpec) -> ModuleType:
    """Import (or re-import) the app module for `spec`; its `app` attribute is the `modal.App`."""
    name = MODULES[spec.architecture]
    with _LOCK:
        _spec._loading = spec
        try:
            module = sys.modules.get(name)
            module = importlib.reload(module) if module is not None else importlib.import_module(name)
        finally:
            _spec._loading = None
    return module


# The standard-library modules of components/ the containers import besides this package.
CONTAINER_MODULES = ("components/catalog.py", "components/secrets.py", "components/wrapper_env.py")


def source_files(root: Path = REPO_ROOT) -> list[Path]:
    """The files whose change must redeploy the app: these modules, those they import, the wrapper."""
    here = root / _HERE.relative_to(REPO_ROOT)
    files = [
        *sorted(here.rglob("*.py")),
        *(root / module for module in CONTAINER_MODULES),
        *sorted((root / WRAPPER_PACKAGE).rglob("*.py")),
    ]
    return [f for f in files if "__pycache__" not in f.parts]


def source_hash(root: Path = REPO_ROOT) -> str:
    digest = hashlib.sha256()
    for path in source_files(root):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def wrapper_requirements(root: Path = REPO_ROOT) -> tuple[str, ...]:
    """The wrapper's pinned runtime requirements: pyproject's `wrapper` extra, the one list."""
    with open(root / "pyproject.toml", "rb") as handle:
        project = tomllib.load(handle)["project"]
    return tuple(project["optional-dependencies"]["wrapper"])
