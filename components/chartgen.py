"""Write the parts of charts/vllm-deploy that repeat what the project decides in Python.

The chart must still spell a few facts the serving plan owns: the GPU types and the node
labels each GPU pool preset selects them by (components/catalog.py, components/gpu_pool.py), vLLM's optional flags (components/plan.py), the enums of the stack config (components/config.py), the
flags that carry a secret and the Secret's keys (components/secrets.py), the wrapper's
settings and the bound on retries (components/wrapper_env.py). They are generated, never edited by hand:

- `templates/_generated.tpl`, whole: named templates the chart's own templates include;
- `values.schema.json`: only the keys listed in `SCHEMA_FIELDS` (the rest of it is hand-written).

`python -m components.chartgen` (or `make generate`) rewrites them; `--check` exits 1 and names
the stale files. tests/helm/test_generated.py fails when they are stale.
"""

from __future__ import annotations

import json
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel

from components import catalog, gpu_pool, wrapper_env
from components.config import GpuPool, Toleration, VllmConfig
from components.plan import OPTIONAL_FLAGS
from components.secrets import SECRET_FLAGS, SECRETS

CHART = Path(__file__).resolve().parent.parent / "charts" / "vllm-deploy"
HELPERS = Path("templates/_generated.tpl")
SCHEMA = Path("values.schema.json")


def _literal(model: type[BaseModel], field: str) -> list[Any]:
    """A `Literal[...]` field's values, `None` first when the field is optional (as the schema lists it)."""
    annotation = model.model_fields[field].annotation
    optional = False
    if isinstance(annotation, types.UnionType) or get_origin(annotation) is not Literal:
        parts = get_args(annotation)
        optional = type(None) in parts
        (annotation,) = [p for p in parts if p is not type(None)]
    values = list(get_args(annotation))
    return [None, *values] if optional else values


def gpu_types() -> list[str]:
    return [*catalog.GPUS, catalog.CPU]


def secret_flags_text() -> str:
    return ", ".join(SECRET_FLAGS)


# values.schema.json: JSON path (property names below "properties") → its generated value.
SCHEMA_FIELDS: dict[tuple[str, ...], Callable[[], Any]] = {
    ("gpu", "type", "enum"): gpu_types,
    ("vllm", "dtype", "enum"): lambda: _literal(VllmConfig, "dtype"),
    ("vllm", "quantization", "enum"): lambda: _literal(VllmConfig, "quantization"),
    ("vllm", "logLevel", "enum"): lambda: _literal(VllmConfig, "log_level"),
    ("vllm", "extraArgs", "description"): lambda: (
        f"More vLLM arguments; never a flag that carries a secret ({secret_flags_text()}, either spelling; "
        "the chart refuses them): set them in secrets"
    ),
    ("wrapper", "maxRetries", "maximum"): lambda: wrapper_env.MAX_RETRIES_LIMIT,
    ("kubernetes", "gpuPool", "preset", "enum"): lambda: _literal(GpuPool, "preset"),
    ("kubernetes", "tolerations", "items", "operator", "enum"): lambda: _literal(Toleration, "operator"),
    ("kubernetes", "tolerations", "items", "effect", "enum"): lambda: _literal(Toleration, "effect"),
}


def _node(schema: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    """The schema object that holds `path`'s last key ("items" steps into an array's item schema)."""
    node = schema
    for name in path[:-1]:
        node = node["items"] if name == "items" else node["properties"][name]
    return node


def schema_text(current: str) -> str:
    schema = json.loads(current)
    for path, value in SCHEMA_FIELDS.items():
        _node(schema, path)[path[-1]] = value()
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def _env_entries(settings: tuple[wrapper_env.Setting, ...]) -> str:
    """Container `env` entries reading each setting from the value of the same key."""
    pipe = {"int": "| int | toString | quote", "float": "| toString | quote", "str": "| quote"}
    entries = []
    for s in settings:
        if s.optional:  # left out while unset, as the plan leaves it out
            entries.append(
                f"{{{{- with .Values.{s.key} }}}}\n- name: {s.variable}\n  value: {{{{ . {pipe[s.kind]} }}}}\n{{{{- end }}}}"
            )
        else:
            entries.append(f"- name: {s.variable}\n  value: {{{{ .Values.{s.key} {pipe[s.kind]} }}}}")
    return "\n".join(entries)


def _optional_args() -> str:
    """vLLM's optional flags (components/plan.py OPTIONAL_FLAGS), as list items, each when its value is set."""
    blocks = []
    for option in OPTIONAL_FLAGS:
        value = f".Values.{option.key}"
        if option.kind == "switch":
            off = f"--no-{option.flag[2:]}"
            blocks.append(
                f'{{{{- if kindIs "bool" {value} }}}}\n- {{{{ ternary "{option.flag}" "{off}" {value} }}}}\n{{{{- end }}}}'
            )
        elif option.kind == "on":
            blocks.append(f"{{{{- if {value} }}}}\n- {option.flag}\n{{{{- end }}}}")
        else:
            pipe = "| int | toString | quote" if option.kind == "number" else "| quote"
            blocks.append(f"{{{{- with {value} }}}}\n- {option.flag}\n- {{{{ . {pipe} }}}}\n{{{{- end }}}}")
    return "\n".join(blocks)


def gpu_pool_labels() -> dict[str, dict[str, gpu_pool.Labels]]:
    """GPU type → preset → the node labels it selects by (presets that cannot select the GPU left out)."""
    table: dict[str, dict[str, gpu_pool.Labels]] = {}
    for gpu in catalog.GPUS.values():
        presets = {p: gpu_pool.preset_labels(p, gpu) for p in gpu_pool.PRESETS}
        table[gpu.name] = {p: labels for p, labels in presets.items() if labels is not None}
    return table


def gpu_pool_storage() -> dict[str, Any]:
    return {"default": gpu_pool.DEFAULT_STORAGE_CLASS, "required": list(gpu_pool.NEEDS_STORAGE_CLASS)}


def helpers_text() -> str:
    keys = "\n".join(f"{key.name}: {key.env}" for key in SECRETS)
    return f"""{{{{/*
GENERATED by `python -m components.chartgen` (make generate) from components/catalog.py,
components/gpu_pool.py, components/plan.py, components/secrets.py and components/wrapper_env.py. Do not edit: change those and regenerate.
*/}}}}

{{{{/* GPU type → GPU pool preset → node label → the values any one of which will do (components/gpu_pool.py), as JSON. */}}}}
{{{{- define "vllm-deploy.gpuPoolLabels" -}}}}
{json.dumps(gpu_pool_labels())}
{{{{- end -}}}}

{{{{/* The preset in force with no kubernetes.gpuPool and no kubernetes.nodeSelector. */}}}}
{{{{- define "vllm-deploy.defaultGpuPool" -}}}}
{gpu_pool.DEFAULT_PRESET}
{{{{- end -}}}}

{{{{/* Per preset: the cache's default StorageClass, and the presets that require kubernetes.cache.storageClass, as JSON. */}}}}
{{{{- define "vllm-deploy.gpuPoolStorage" -}}}}
{json.dumps(gpu_pool_storage())}
{{{{- end -}}}}

{{{{/* The GPU type that means vLLM's CPU build. */}}}}
{{{{- define "vllm-deploy.cpuType" -}}}}
{catalog.CPU}
{{{{- end -}}}}

{{{{/* Flags that would put a secret on vLLM's command line (`_` spellings are normalised to `-` first), as JSON. */}}}}
{{{{- define "vllm-deploy.secretFlags" -}}}}
{json.dumps(list(SECRET_FLAGS))}
{{{{- end -}}}}

{{{{/* vLLM's optional flags (components/plan.py OPTIONAL_FLAGS): list items, each when its value is set. */}}}}
{{{{- define "vllm-deploy.optionalVllmArgs" -}}}}
{_optional_args()}
{{{{- end -}}}}

{{{{/* The wrapper's settings from the stack's keys (components/wrapper_env.py STACK_SETTINGS), as env entries. */}}}}
{{{{- define "vllm-deploy.wrapperSettingsEnv" -}}}}
{_env_entries(wrapper_env.STACK_SETTINGS)}
{{{{- end -}}}}

{{{{/* Scale-to-zero settings (SCALER_SETTINGS), as env entries; the StatefulSet's namespace and name follow. */}}}}
{{{{- define "vllm-deploy.scalerSettingsEnv" -}}}}
{_env_entries(wrapper_env.SCALER_SETTINGS)}
{{{{- end -}}}}

{{{{/* Autoscaling settings (AUTOSCALE_SETTINGS), as env entries, after the StatefulSet's name; only with a range. */}}}}
{{{{- define "vllm-deploy.autoscaleSettingsEnv" -}}}}
{_env_entries(wrapper_env.AUTOSCALE_SETTINGS)}
{{{{- end -}}}}

{{{{/* `secrets.<name>` value → the Secret's key, as YAML (`fromYaml`). */}}}}
{{{{- define "vllm-deploy.secretKeys" -}}}}
{keys}
{{{{- end -}}}}
"""


def generated(chart: Path = CHART) -> dict[Path, str]:
    """Each generated file (relative to the chart) → the text it must have."""
    return {HELPERS: helpers_text(), SCHEMA: schema_text((chart / SCHEMA).read_text())}


def stale(chart: Path = CHART) -> list[Path]:
    return [
        path
        for path, text in generated(chart).items()
        if not (chart / path).is_file() or (chart / path).read_text() != text
    ]


def main(argv: list[str]) -> int:
    if argv == ["--check"]:
        found = stale()
        for path in found:
            print(f"stale: {CHART.name}/{path}; run `make generate`", file=sys.stderr)
        return 1 if found else 0
    if argv:
        print("usage: python -m components.chartgen [--check]", file=sys.stderr)
        return 2
    for path, text in generated().items():
        (CHART / path).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
