"""`vllm-deploy check STACK`: validate a stack file and show what it implies."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer
import yaml

from components import changes, gpu_pool, policy
from components.cli.common import DEFAULT_STACKS_DIR, StackArg, StacksDir, load
from components.config import StackConfig
from components.fit import FitReport
from components.plan import serving_plan
from components.targets import target_of


@dataclass(frozen=True)
class Checked:
    """What `check` found: the fit, and for a target that declares objects their budget and policy."""

    fit: FitReport | None
    tensor_parallel_size: int
    startup_budget_seconds: int | None  # None: the target declares no Kubernetes objects
    violations: list[str]
    # What may go wrong on a real cluster but is not wrong in the objects (the exit status stays 0).
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations


def check_stack(config: StackConfig) -> Checked:
    plan = serving_plan(config)
    objects = target_of(config).objects(config)
    return Checked(
        fit=config.fit,
        tensor_parallel_size=plan.gpu.tensor_parallel_size,
        startup_budget_seconds=plan.startup_budget_seconds if objects is not None else None,
        violations=policy.violations(objects) if objects is not None else [],
        warnings=gpu_pool.scale_from_zero_warnings(config),
    )


def format_lines(stack: str, config: StackConfig, checked: Checked) -> list[str]:
    lines = [f"{stack}: ok — {config.target}, {config.model.id} as {config.model.name!r}"]
    if report := checked.fit:
        lines.append(
            f"  fit: {report.need_gib:.1f} GiB needed of {report.have_gib:.1f} GiB "
            f"({report.count} × {report.gpu} at {report.utilization:g}); tensor parallel {checked.tensor_parallel_size}"
        )
    lines += [f"  warning: {w}" for w in advice(config)]
    if checked.startup_budget_seconds is not None:
        lines.append(f"  startup budget: {checked.startup_budget_seconds // 60} min")
        found = checked.violations
        lines.append(f"  policy: {'ok' if not found else f'{len(found)} violation(s)'}")
        lines += [f"    {violation}" for violation in found]
    lines += [f"  warning: {warning}" for warning in checked.warnings]
    return lines


def advice(config: StackConfig) -> list[str]:
    """What a GPU stack should pin (warnings: the stack is valid as it is)."""
    if config.gpu.is_cpu or config.model.revision:
        return []
    return [
        f"model.revision is unset: each cold start loads whatever {config.model.id} holds that day; pin "
        f"a commit (`model.revision: <sha>`, from https://huggingface.co/{config.model.id}/commits/main)"
    ]


Previous = Annotated[
    Path | None,
    typer.Option(
        "--previous",
        help="What `vllm-deploy render STACK` printed for the deployed stack: say what `pulumi up` will replace.",
        exists=True,
        dir_okay=False,
    ),
]


def change_lines(config: StackConfig, previous: Path) -> list[str]:
    before = [doc for doc in yaml.safe_load_all(previous.read_text()) if doc]
    after = target_of(config).objects(config) or []
    found = changes.consequences(before, after)
    return ["  changes since --previous:", *[f"    {line}" for line in found or ["nothing"]]]


def check(stack: StackArg, stacks_dir: StacksDir = DEFAULT_STACKS_DIR, previous: Previous = None) -> None:
    """Validate a stack file and show what it implies (GPU fit, tensor parallelism, startup budget)."""
    config = load(stack, stacks_dir)
    checked = check_stack(config)
    for line in format_lines(stack, config, checked):
        typer.echo(line)
    if previous is not None:
        for line in change_lines(config, previous):
            typer.echo(line)
    if not checked.ok:
        raise typer.Exit(1)
    idle = f"after {config.idle_timeout} s idle" if config.scales_to_zero else "never (always on)"
    typer.echo(f"  scale to zero: {idle}")


def register(app: typer.Typer) -> None:
    app.command()(check)
