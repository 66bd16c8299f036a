"""Every output a user or a deploy reads, for every shipped stack, as named text files.

What it writes, per stack in stacks/ (file name → content):

    render/<stack>.txt        `vllm-deploy render STACK`: exit code, stdout, stderr
    check/<stack>.txt         `vllm-deploy check STACK`
    cost/<stack>.json         `vllm-deploy cost STACK --json` (or its error)
    values/<stack>.yaml       `vllm-deploy values STACK`                        (Kubernetes stacks)
    values/<stack>.placeholders.yaml   … `--secret-placeholders`
    helm/<stack>.yaml         `helm template` of the chart with those values, as the stack's release
    helm/<stack>.placeholders.yaml
    modal/<stack>.json        the Modal `AppSpec` `pulumi up` deploys, in its canonical JSON  (Modal stacks)

and, for the config variants tests/helm/test_parity.py renders (every branch of the templates),
`variants/<name>.yaml`: the objects and the placeholder Helm values; `modal/<stack>.always-on.json`:
a Modal stack with `idleTimeout: never`.

`python -m tests.golden.snapshot write DIR` writes them; `python -m tests.golden.snapshot diff DIR`
prints a unified diff against DIR and exits 1 when anything differs. `tests/golden/test_golden.py`
compares against the files checked in under `tests/golden/files/`; regenerate them with
`make golden` after a deliberate change, and say why in the commit.
"""

from __future__ import annotations

import difflib
import json
import sys
from pathlib import Path

import helm_python
import yaml
from typer.testing import CliRunner

from components.stackfile import load_stack, stack_names

CHART_DIR = Path(__file__).resolve().parents[2] / "charts" / "vllm-deploy"
FILES = Path(__file__).resolve().parent / "files"


def _cli(*args: str) -> str:
    from components.cli import app

    result = CliRunner().invoke(app, list(args))
    return f"exit {result.exit_code}\n--- stdout\n{result.stdout}--- stderr\n{result.stderr}"


def _cli_stdout(*args: str) -> str:
    from components.cli import app

    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def _helm(chart: helm_python.Chart, values_text: str, release: str, namespace: str) -> str:
    rendered = chart.render(yaml.safe_load(values_text), name=release, namespace=namespace)
    return "".join(f"# Source: {path}\n{text.strip()}\n---\n" for path, text in sorted(rendered.items()))


def _modal_spec(stack: str) -> str:
    from components.modal_target import app_spec

    spec = app_spec(load_stack(stack), stack)
    return json.dumps(spec.to_dict(), sort_keys=True, indent=2) + "\n"


def _variants() -> dict[str, str]:
    from components import manifests
    from components.cli.common import dump_yaml
    from components.config import parse_stack_config
    from components.helm_values import helm_values
    from components.stackfile import read_raw
    from tests.helm.test_parity import VARIANTS

    files = {}
    for name, raw in sorted(VARIANTS.items()):
        config = parse_stack_config(raw, secrets_present={"vllmApiKey"}, require_secrets=False)
        values = yaml.safe_dump(helm_values(config, "placeholders"), sort_keys=False)
        files[f"variants/{name}.yaml"] = dump_yaml(manifests.build(config).all()) + "--- # helm values\n" + values
    for stack in ("modal-dev", "modal-prod"):
        from components.modal_target import app_spec

        config = parse_stack_config({**read_raw(stack), "idleTimeout": "never"}, require_secrets=False)
        files[f"modal/{stack}.always-on.json"] = json.dumps(app_spec(config, stack).to_dict(), sort_keys=True, indent=2) + "\n"
    return files


def snapshot() -> dict[str, str]:
    files: dict[str, str] = _variants()
    with helm_python.Chart.load(CHART_DIR) as chart:
        for stack in stack_names():
            config = load_stack(stack)
            files[f"render/{stack}.txt"] = _cli("render", stack)
            files[f"check/{stack}.txt"] = _cli("check", stack)
            files[f"cost/{stack}.json"] = _cli("cost", stack, "--json")
            if config.target == "kubernetes":
                k = config.kubernetes
                for suffix, flags in (("", ()), (".placeholders", ("--secret-placeholders",))):
                    values = _cli_stdout("values", stack, *flags)
                    files[f"values/{stack}{suffix}.yaml"] = values
                    files[f"helm/{stack}{suffix}.yaml"] = _helm(chart, values, k.release_name, k.namespace)
            else:
                files[f"modal/{stack}.json"] = _modal_spec(stack)
    return files


def write(directory: Path) -> None:
    """Replace the snapshot in `directory` (files no longer produced are removed)."""
    for old in directory.rglob("*") if directory.is_dir() else ():
        if old.is_file():
            old.unlink()
    for name, text in snapshot().items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def differences(directory: Path) -> list[str]:
    """Unified diffs between `directory` and a fresh snapshot; empty when identical."""
    now = snapshot()
    before = {str(p.relative_to(directory)): p.read_text() for p in directory.rglob("*") if p.is_file()}
    lines: list[str] = []
    for name in sorted(before.keys() | now.keys()):
        old, new = before.get(name, ""), now.get(name, "")
        if old != new:
            lines += difflib.unified_diff(
                old.splitlines(keepends=True), new.splitlines(keepends=True), f"golden/{name}", f"now/{name}"
            )
    return lines


def main(argv: list[str]) -> int:
    command, directory = (argv + ["diff", str(FILES)])[:2] if len(argv) < 2 else argv[:2]
    if command == "write":
        write(Path(directory))
        return 0
    found = differences(Path(directory))
    sys.stdout.writelines(found)
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
