"""`vllm-deploy`: what a user runs beside `pulumi` — no cluster and no Pulumi CLI needed."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
import yaml

from components import policy
from components.config import ConfigError, StackConfig
from components.plan import serving_plan
from components.stackfile import STACKS_DIR, load_stack
from components.targets import target_of

app = typer.Typer(
    help="Deploy vLLM to Kubernetes or Modal with Pulumi: render, check and operate stacks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

StackArg = Annotated[str, typer.Argument(help="Stack name: stacks/Pulumi.<STACK>.yaml")]
StacksDir = Annotated[Path, typer.Option("--stacks-dir", help="Where the stack files live")]


def _load(stack: str, stacks_dir: Path) -> StackConfig:
    try:
        return load_stack(stack, stacks_dir)
    except ConfigError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None


def dump_yaml(documents: list[dict]) -> str:
    return yaml.safe_dump_all(documents, sort_keys=False, explicit_start=True)


@app.command()
def render(stack: StackArg, stacks_dir: StacksDir = STACKS_DIR) -> None:
    """Print the Kubernetes objects `pulumi up` would create, as multi-document YAML (secrets redacted)."""
    config = _load(stack, stacks_dir)
    objects = target_of(config).objects(config)
    if objects is None:
        typer.echo(f"error: stack {stack} targets {config.target}; render shows Kubernetes objects", err=True)
        raise typer.Exit(2)
    sys.stdout.write(dump_yaml(objects))


@app.command()
def check(stack: StackArg, stacks_dir: StacksDir = STACKS_DIR) -> None:
    """Validate a stack file and show what it implies (GPU fit, tensor parallelism, startup budget)."""
    config = _load(stack, stacks_dir)
    report = config.fit
    typer.echo(f"{stack}: ok — {config.target}, {config.model.id} as {config.model.name!r}")
    if report:
        typer.echo(
            f"  fit: {report.need_gib:.1f} GiB needed of {report.have_gib:.1f} GiB "
            f"({report.count} × {report.gpu} at {report.utilization:g}); tensor parallel {config.tensor_parallel_size}"
        )
    objects = target_of(config).objects(config)
    if objects is not None:
        typer.echo(f"  startup budget: {serving_plan(config).startup_budget_seconds // 60} min")
        found = policy.violations(objects)
        typer.echo(f"  policy: {'ok' if not found else f'{len(found)} violation(s)'}")
        for violation in found:
            typer.echo(f"    {violation}")
        if found:
            raise typer.Exit(1)
    idle = f"after {config.idle_timeout} s idle" if config.scales_to_zero else "never (always on)"
    typer.echo(f"  scale to zero: {idle}")


from components.cost import cost_command  # noqa: E402  (logic in components/cost.py)

app.command("cost")(cost_command)

from components.smoke import smoke_command  # noqa: E402  (logic in components/smoke.py)

app.command("smoke")(smoke_command)


@app.command()
def values(
    stack: StackArg,
    stacks_dir: StacksDir = STACKS_DIR,
    secret_placeholders: Annotated[
        bool, typer.Option(help="Let the chart create the Secret, with <redacted> placeholders to replace")
    ] = False,
) -> None:
    """Print the Helm values file that makes charts/vllm-deploy declare this stack's objects."""
    from components.helm_values import values_yaml

    config = _load(stack, stacks_dir)
    if target_of(config).objects(config) is None:
        typer.echo(f"error: stack {stack} targets {config.target}; the Helm chart deploys to Kubernetes", err=True)
        raise typer.Exit(2)
    sys.stdout.write(values_yaml(config, "placeholders" if secret_placeholders else "existing", stack))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
