"""What each modal stack's Modal app declares, read back through the SDK's own objects."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pytest

from components.modal_target import app_spec
from components.plan import serving_plan
from components.config import ConfigError, parse_stack_config
from components.modal_app import REPO_ROOT, AppSpec, SpecError, load_app, source_files, source_hash, wrapper_requirements
from components.modal_app.spec import SPEC_ENV, vllm_version_from_image
from components.stackfile import load_stack, read_raw
from tests.modal.conftest import spec_for
from tests.modal.modal_objects import dockerfile_commands, mounted_files

DEV_SECRET = "modal.Secret.from_name('vllm-secrets-modal-dev')"
PROD_SECRET = "modal.Secret.from_name('vllm-secrets-modal-prod')"
HF_CACHE = "/root/.cache/huggingface"


def _volumes(fn) -> dict[str, str]:
    return {path: mount.name for path, mount in fn.info().volumes.items()}


def _flag(args: tuple[str, ...], flag: str) -> str:
    return args[args.index(flag) + 1]


# ------------------------------------------------------------------ modal-dev


def test_dev_is_autoscale_8b_on_one_a100_scaling_to_zero_after_two_minutes(dev):
    spec, module = dev
    assert module.app.name == "vllm-autoscale"
    assert spec.architecture == "autoscale"
    gpu = module.serve_vllm.info()
    assert gpu.gpus == [("A100-80GB", 1)]
    assert gpu.timeout == 30 * 60 and gpu.startup_timeout == spec.startup_timeout
    assert gpu.concurrency_info.max_inputs == 32
    assert DEV_SECRET in gpu.secrets
    assert _volumes(module.serve_vllm) == {HF_CACHE: "vllm-deploy-hf-cache", "/root/.cache/vllm": "vllm-deploy-vllm-cache"}
    assert gpu.web_info is not None
    # No public accessor for these two in Modal 1.6: the spec the decorator was given is the truth.
    assert spec.scaledown_window == 120 and spec.min_containers == 0 and spec.max_containers == 1
    assert spec.idle_description == "2 minutes"
    args = spec.vllm_args
    assert _flag(args, "--model") == "meta-llama/Llama-3.1-8B-Instruct"
    assert _flag(args, "--tensor-parallel-size") == "1"


def test_dev_wrapper_is_always_on_cpu_asgi_with_the_secret(dev):
    spec, module = dev
    wrapper = module.serve_wrapper.info()
    assert wrapper.gpus == [] and wrapper.volumes == {}
    assert DEV_SECRET in wrapper.secrets
    assert wrapper.concurrency_info.max_inputs == 100
    assert wrapper.web_info is not None
    assert spec.wrapper_min_containers == 1
    env = spec.wrapper_env
    assert env["VLLM_MODEL"] == "llama-3.1-8b-instruct"
    # A first request waits for a cold GPU start; clients of the old deployment allowed 180 s.
    assert int(env["VLLM_TIMEOUT"]) >= 180 + 60
    assert not {"VLLM_API_KEY", "VLLM_WRAPPER_API_KEY"} & set(env)  # keys come from the secret only


def test_wrapper_image_ships_the_repository_wrapper_package_itself(dev):
    spec, module = dev
    files = mounted_files(module.serve_wrapper)
    wrapper_dir = REPO_ROOT / "wrapper"
    expected = {f"/root/wrapper/{p.relative_to(wrapper_dir)}": p for p in wrapper_dir.rglob("*.py") if "__pycache__" not in p.parts}
    shipped = {remote: local for remote, local in files.items() if remote.startswith("/root/wrapper/")}
    assert shipped == expected  # the same files, read from the repository at deploy time: not a copy
    commands = dockerfile_commands(module.serve_wrapper)
    install = next(c for c in commands if "uv pip install" in c)
    assert sorted(install.split("--compile-bytecode ", 1)[1].split()) == sorted(wrapper_requirements())
    assert not any("vllm==" in c for c in commands)
    assert commands[0].startswith("FROM python:3.11")


def test_gpu_image_pins_the_kubernetes_vllm_release_and_caches_weights_on_the_volume(dev, prod):
    for spec, module in (dev, prod):
        commands = dockerfile_commands(module.serve_vllm)
        # vllm==0.32.0's wheel links libcudart.so.13 (read from the wheel): a CUDA 13 toolkit.
        assert commands[0] == "FROM nvidia/cuda:13.0.0-devel-ubuntu22.04"
        config = load_stack("modal-dev" if spec.architecture == "autoscale" else "modal-prod")
        release = config.vllm.image.rsplit(":v", 1)[1]
        assert any(c.endswith(f"vllm=={release}") for c in commands)
        assert f"ENV HF_HOME={HF_CACHE}" in commands
        assert HF_CACHE in module.serve_vllm.info().volumes
        # The GPU container does not get the wrapper package.
        assert not any(r.startswith("/root/wrapper/") for r in mounted_files(module.serve_vllm))


def test_app_modules_and_spec_travel_with_the_function(dev):
    _, module = dev
    files = mounted_files(module.serve_vllm)
    here = REPO_ROOT / "components" / "modal_app"
    for path in here.glob("*.py"):
        assert files[f"/root/components/modal_app/{path.name}"] == path


# ----------------------------------------------------------------- modal-prod


def test_prod_is_integrated_70b_on_two_a100_tensor_parallel_two(prod):
    spec, module = prod
    assert module.app.name == "vllm-llama70b"
    assert spec.web_functions == ("serve_vllm",) and not hasattr(module, "serve_wrapper")
    info = module.serve_vllm.info()
    assert info.gpus == [("A100-80GB", 2)]
    assert info.timeout == 30 * 60  # one stuck stream holds the two A100s 30 min at most, not 24 h
    assert info.concurrency_info.max_inputs == 64
    assert PROD_SECRET in info.secrets
    assert _volumes(module.serve_vllm)[HF_CACHE] == "vllm-deploy-hf-cache"
    assert spec.scaledown_window == 15 * 60 and spec.min_containers == 0 and spec.max_containers == 1
    args = spec.vllm_args
    assert _flag(args, "--model") == "meta-llama/Llama-3.1-70B-Instruct"
    assert _flag(args, "--tensor-parallel-size") == "2"
    assert _flag(args, "--max-model-len") == "8192"
    assert _flag(args, "--gpu-memory-utilization") == "0.95"
    # Same flags as the Kubernetes target builds for the same config.
    assert args == serving_plan(load_stack("modal-prod")).vllm_args


def test_70b_on_one_a100_is_refused_with_the_count_that_fits():
    raw = {**read_raw("modal-prod"), "gpu": {"type": "A100-80GB", "count": 1}}
    with pytest.raises(ConfigError, match="gpu.count: 2"):
        parse_stack_config(raw, require_secrets=False)


# ------------------------------------------------------------------- secrets


@pytest.mark.parametrize("stack", ["modal-dev", "modal-prod"])
def test_no_secret_on_any_command_line_or_in_the_spec(stack):
    spec = spec_for(stack)
    command = spec.vllm_command()
    assert not any(a.startswith(("--api-key", "--hf-token")) for a in command)
    assert "VLLM_API_KEY" not in spec.to_json() and "HF_TOKEN" not in spec.to_json()
    with pytest.raises(SpecError, match="--api-key"):
        AppSpec.from_dict({**spec.to_dict(), "vllm_args": [*spec.vllm_args, "--api-key=abc"]})


# ------------------------------------------------------------- current Modal API


@pytest.mark.parametrize("stack", ["modal-dev", "modal-prod"])
def test_declaring_uses_no_deprecated_modal_api(stack):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_app(spec_for(stack))
    # Old names (container_idle_timeout, keep_warm, allow_concurrent_inputs, ...) raise or warn.
    assert [f"{w.category.__name__}: {w.message}" for w in caught] == []


def test_container_reimports_the_same_app_from_its_environment_without_pulumi_or_pydantic():
    """Inside Modal the module is imported again with only the spec env var: same functions."""
    spec = spec_for("modal-dev")
    code = """
import sys, json
class Block:
    def find_spec(self, name, *a):
        if name.split('.')[0] in ('pulumi', 'pydantic', 'yaml', 'wrapper'):
            raise ImportError('not in the container: ' + name)
sys.meta_path.insert(0, Block())
import components.modal_app.autoscale as m
print(json.dumps({n: [m.__dict__[n].info().gpus, m.__dict__[n].info().timeout] for n in ('serve_vllm', 'serve_wrapper')}))
"""
    env = {**os.environ, SPEC_ENV: spec.to_json(), "PYTHONPATH": str(REPO_ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"serve_vllm": [[["A100-80GB", 1]], 1800], "serve_wrapper": [[], 1800]}


# --------------------------------------------------------------- validation


def test_spec_validation_catches_what_modal_would_reject():
    spec = spec_for("modal-dev")
    base = spec.to_dict()
    with pytest.raises(SpecError, match="1 … 8"):
        AppSpec.from_dict({**base, "gpu_count": 9})
    with pytest.raises(SpecError, match="not a Modal GPU"):
        AppSpec.from_dict({**base, "gpu_type": "A100-80G"})
    with pytest.raises(SpecError, match="2 … 3600"):
        AppSpec.from_dict({**base, "scaledown_window": 1})
    # Pulumi state returns numbers as floats: the round trip is exact anyway.
    floats = {k: float(v) if isinstance(v, int) and not isinstance(v, bool) else v for k, v in base.items()}
    assert AppSpec.from_dict(floats) == spec


def test_vllm_release_comes_from_the_image_tag_or_modal_vllm_version():
    assert vllm_version_from_image("vllm/vllm-openai:v0.32.0") == "0.32.0"
    with pytest.raises(SpecError, match="modal.vllmVersion"):
        vllm_version_from_image("vllm/vllm-openai@sha256:" + "a" * 64)
    raw = {**read_raw("modal-dev"), "modal": {**read_raw("modal-dev")["modal"], "vllmVersion": "0.31.0"}}
    config = parse_stack_config(raw, require_secrets=False)
    assert app_spec(config, "x").vllm_version == "0.31.0"


def test_always_on_keeps_one_gpu_container(dev):
    raw = {**read_raw("modal-prod"), "idleTimeout": "never"}
    spec = app_spec(parse_stack_config(raw, require_secrets=False), "x")
    assert spec.scaledown_window is None and spec.min_containers == 1
    module = load_app(spec)
    assert module.serve_vllm.info().gpus == [("A100-80GB", 2)]


def test_source_hash_covers_modal_app_and_wrapper_files(tmp_path):
    root = tmp_path / "repo"
    for path in source_files():
        target = root / path.relative_to(REPO_ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    (root / "components" / "modal_app").mkdir(parents=True, exist_ok=True)
    assert source_hash(root) == source_hash()
    relative = {str(p.relative_to(REPO_ROOT)) for p in source_files()}
    assert "wrapper/streaming.py" in relative and "components/modal_app/autoscale.py" in relative
    (root / "wrapper" / "streaming.py").write_text("# changed\n")
    assert source_hash(root) != source_hash()


def test_components_never_import_the_wrapper_package():
    """The wrapper is shipped as source and imported by name inside its Modal container only."""
    import ast

    for path in (REPO_ROOT / "components").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            assert not any(n == "wrapper" or n.startswith("wrapper.") for n in names), path


# ---------------------------------------------------------------- proxy auth


def test_autoscale_without_a_proxy_token_fails_before_deploying_naming_the_keys():
    present = {"vllmApiKey", "hfToken"}
    with pytest.raises(ConfigError) as error:
        parse_stack_config(read_raw("modal-dev"), secrets_present=present)
    assert "modalProxyTokenId: required for autoscale" in str(error.value)
    assert "modalProxyTokenSecret" in str(error.value) and "proxy-auth-tokens" in str(error.value)
    # The integrated shape keeps vLLM's own key as its guard: no proxy token needed.
    parse_stack_config(read_raw("modal-prod"), secrets_present=present)


def test_integrated_vllm_stays_public_behind_its_api_key(prod):
    _, module = prod
    assert module.serve_vllm.info().web_info.unauthenticated is True


# --------------------------------------------------------------- bounded cost


def test_a_modal_stack_without_bounds_gets_one_gpu_container_and_a_30_minute_request_limit():
    raw = read_raw("modal-prod")
    modal = {k: v for k, v in raw["modal"].items() if k not in ("maxContainers", "functionTimeout")}
    spec = app_spec(parse_stack_config({**raw, "modal": modal}, require_secrets=False), "x")
    assert spec.max_containers == 1 and spec.function_timeout == 1800
    assert load_app(spec).serve_vllm.info().timeout == 1800


def test_max_containers_below_min_containers_is_refused_naming_the_key():
    raw = read_raw("modal-dev")
    with pytest.raises(ConfigError, match="modal.maxContainers: 1 is below modal.minContainers 2"):
        parse_stack_config({**raw, "modal": {**raw["modal"], "minContainers": 2}}, require_secrets=False)
