"""`AppSpec`: everything a Modal app definition needs, as plain typed data.

Built from the stack's serving plan on the deploying machine (`AppSpec.from_plan`), then
travels as JSON: into the app modules when they are loaded for a deploy (`load_app`), and
into the Modal containers as the `VLLM_DEPLOY_MODAL_SPEC` environment variable, so the
container re-imports the same module and declares exactly the same functions.

Standard library only: this module is imported inside the Modal containers, where neither
pydantic nor Pulumi is installed. It holds no secret: keys and tokens reach the containers
through the named Modal Secret only.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, Literal

from components import catalog
from components.secrets import secret_flag

if TYPE_CHECKING:  # the deploying side only
    from components.config import ModalConfig
    from components.plan import ServingPlan

SPEC_ENV = "VLLM_DEPLOY_MODAL_SPEC"
ARCHITECTURES = ("integrated", "autoscale")
HF_CACHE_DIR = "/root/.cache/huggingface"
VLLM_CACHE_DIR = "/root/.cache/vllm"
# Modal's GPU strings (the catalog's names) and the most of each per container.
MODAL_GPU_MAX_COUNT = {gpu.name: gpu.modal_max_count for gpu in catalog.GPUS.values()}
_APP_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}$")


class SpecError(ValueError):
    """A spec Modal would reject or that would leak a secret."""


@dataclass(frozen=True)
class AppSpec:
    architecture: Literal["integrated", "autoscale"]
    app_name: str
    secret_name: str
    model_id: str
    served_model_name: str
    gpu_type: str
    gpu_count: int
    vllm_version: str
    # vLLM's OpenAI server flags, without --api-key (vLLM reads VLLM_API_KEY from the secret).
    vllm_args: tuple[str, ...]
    # Seconds an idle GPU container stays up (Modal's scaledown_window); None = always on.
    scaledown_window: int | None
    min_containers: int
    max_containers: int | None
    function_timeout: int
    startup_timeout: int
    max_concurrent_inputs: int
    hf_cache_volume: str = "vllm-deploy-hf-cache"
    vllm_cache_volume: str = "vllm-deploy-vllm-cache"
    port: int = 8000  # vLLM's port in the container (components.plan.VLLM_PORT)
    # autoscale only: the always-on wrapper in front of the GPU function.
    wrapper_requirements: tuple[str, ...] = ()
    wrapper_env: dict[str, str] = field(default_factory=dict)
    wrapper_min_containers: int = 1
    wrapper_max_concurrent_inputs: int = 100
    # A `download_weights` function `pulumi up` runs once after deploy (modal.predownload).
    predownload: bool = False

    def __post_init__(self) -> None:
        problems = []
        if self.architecture not in ARCHITECTURES:
            problems.append(f"architecture {self.architecture!r}: use one of {', '.join(ARCHITECTURES)}")
        if not _APP_NAME.match(self.app_name):
            problems.append(f"app name {self.app_name!r}: letters, digits, '.', '_', '-', at most 64")
        limit = MODAL_GPU_MAX_COUNT.get(self.gpu_type)
        if limit is None:
            problems.append(f"GPU {self.gpu_type!r} is not a Modal GPU; use one of {', '.join(MODAL_GPU_MAX_COUNT)}")
        elif not 1 <= self.gpu_count <= limit:
            problems.append(f"GPU count {self.gpu_count}: Modal gives 1 … {limit} × {self.gpu_type} per container")
        if self.scaledown_window is not None and not 2 <= self.scaledown_window <= 3600:
            problems.append(f"scaledown_window {self.scaledown_window}: Modal accepts 2 … 3600 s")
        if self.scaledown_window is None and self.min_containers < 1:
            problems.append("always on (no idle timeout) needs min_containers ≥ 1")
        for arg in self.vllm_args:
            if flag := secret_flag(arg):
                raise SpecError(f"{flag} must not be a command-line argument (secrets come from env)")
        if self.architecture == "autoscale" and not self.wrapper_requirements:
            problems.append("autoscale needs the wrapper's requirements")
        if problems:
            raise SpecError("; ".join(problems))

    # ------------------------------------------------------------------ derived

    @property
    def gpu(self) -> str:
        """Modal's GPU string: `A100-80GB:2`."""
        return f"{self.gpu_type}:{self.gpu_count}"

    @property
    def web_functions(self) -> tuple[str, ...]:
        """Names of the web functions, the first one the public entry point."""
        return ("serve_vllm",) if self.architecture == "integrated" else ("serve_wrapper", "serve_vllm")

    @property
    def idle_description(self) -> str:
        if self.scaledown_window is None:
            return "never (always on)"
        minutes, seconds = divmod(self.scaledown_window, 60)
        if seconds:
            return f"{self.scaledown_window} seconds"
        return f"{minutes} minute" + ("s" if minutes != 1 else "")

    @property
    def model_revision(self) -> str | None:
        """The pinned revision (`model.revision`, vLLM's `--revision`); None = the repository's default branch."""
        args = list(self.vllm_args)
        return args[args.index("--revision") + 1] if "--revision" in args else None

    def vllm_command(self) -> list[str]:
        """How the GPU container starts vLLM's OpenAI server (no secret on it). `vllm serve`, the
        documented CLI (the `api_server` module entrypoint is deprecated); it takes the same flags,
        `--model` included (its positional model tag is optional)."""
        return ["vllm", "serve", *self.vllm_args]

    @property
    def vllm_shutdown_seconds(self) -> int:
        """How long vLLM may drain on exit: its own --shutdown-timeout (the plan sets it), else 30 s."""
        args = list(self.vllm_args)
        if "--shutdown-timeout" in args:
            return int(args[args.index("--shutdown-timeout") + 1])
        return 30

    def function_env(self) -> dict[str, str]:
        """Plain (non-secret) environment of every container: the spec itself and cache paths."""
        return {SPEC_ENV: self.to_json()}

    # --------------------------------------------------------------- transport

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["vllm_args"] = list(self.vllm_args)
        data["wrapper_requirements"] = list(self.wrapper_requirements)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AppSpec:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for key in ("vllm_args", "wrapper_requirements"):
            values[key] = tuple(values.get(key) or ())
        values["wrapper_env"] = {str(k): str(v) for k, v in (values.get("wrapper_env") or {}).items()}
        for key in ("gpu_count", "min_containers", "function_timeout", "startup_timeout", "max_concurrent_inputs",
                    "port", "wrapper_min_containers", "wrapper_max_concurrent_inputs"):  # fmt: skip
            if key in values:
                values[key] = int(values[key])  # Pulumi state hands numbers back as floats
        for key in ("scaledown_window", "max_containers"):  # Pulumi drops None values from maps
            values.setdefault(key, None)
            if values[key] is not None:
                values[key] = int(values[key])
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> AppSpec:
        return cls.from_dict(json.loads(text))

    # -------------------------------------------------------------- from plan

    @classmethod
    def from_plan(
        cls,
        plan: ServingPlan,
        modal: ModalConfig,
        *,
        app_name: str,
        secret_name: str,
        wrapper_requirements: tuple[str, ...] = (),
    ) -> AppSpec:
        """The Modal app for a validated `target: modal` stack: its serving plan and its `modal` section."""
        idle = plan.idle_timeout or None
        architecture = modal.architecture
        min_containers = modal.min_containers if idle else max(1, modal.min_containers)
        wrapper_env: dict[str, str] = {}
        if architecture == "autoscale":
            # A request may arrive while the GPU function is scaled to zero: Modal holds it until
            # vLLM is up. The wrapper's URL of vLLM is known only in its container (wrapper_asgi).
            wrapper_env = plan.wrapper.environment(timeout=plan.wrapper.timeout_through_cold_start)
        return cls(
            architecture=architecture,
            app_name=app_name,
            secret_name=secret_name,
            model_id=plan.model_id,
            served_model_name=plan.served_name,
            gpu_type=plan.gpu.type,
            gpu_count=plan.gpu.count,
            vllm_version=modal.vllm_version or vllm_version_from_image(plan.vllm_image),
            vllm_args=plan.vllm_args,
            scaledown_window=idle,
            min_containers=min_containers,
            max_containers=modal.max_containers,
            function_timeout=modal.function_timeout,
            startup_timeout=plan.startup_budget_seconds,
            max_concurrent_inputs=modal.max_concurrent_inputs,
            port=plan.vllm_port,
            wrapper_requirements=tuple(wrapper_requirements) if architecture == "autoscale" else (),
            wrapper_env=wrapper_env,
            wrapper_max_concurrent_inputs=modal.wrapper_max_concurrent_inputs,
            predownload=modal.predownload,
        )


def vllm_version_from_image(image: str) -> str:
    """`vllm/vllm-openai:v0.32.0` → `0.32.0` (the same release as the Kubernetes image)."""
    tag = image.rsplit(":", 1)[-1] if ":" in image.rsplit("/", 1)[-1] else ""
    match = re.fullmatch(r"v?(\d+(?:\.\d+){1,3}(?:\.post\d+)?)", tag)
    if not match:
        raise SpecError(f"cannot tell the vLLM release from the image {image!r}; set modal.vllmVersion (e.g. 0.32.0)")
    return match.group(1)


# ----------------------------------------------------------- the current spec

_loading: AppSpec | None = None


def current(architecture: str) -> AppSpec:
    """The spec an app module declares itself from.

    Locally it is the one `load_app` is loading; inside a Modal container it is the
    `VLLM_DEPLOY_MODAL_SPEC` environment variable the function was deployed with.
    """
    spec = _loading
    if spec is None:
        text = os.environ.get(SPEC_ENV)
        if not text:
            raise SpecError(
                f"no Modal app spec: load this module with components.modal_app.load_app(spec), or set {SPEC_ENV}"
            )
        spec = AppSpec.from_json(text)
    if spec.architecture != architecture:
        raise SpecError(f"the spec is for the {spec.architecture!r} architecture, not {architecture!r}")
    return spec
