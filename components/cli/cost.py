"""`vllm-deploy cost STACK`: the estimate of components/cost.py, as a table or as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from components.config import ConfigError
from components.cost import DEFAULT_COLD_START_SECONDS, DEFAULT_HOURS, HOURS_PER_DAY, CostError, Estimate, estimate
from components.stackfile import STACKS_DIR, load_stack


def _money(value: float) -> str:
    return f"${value:,.2f}"


def _rate(value: float) -> str:
    """Hourly prices keep their digits ($2.4984, $0.0001); monthly sums are in cents."""
    text = f"{value:,.4f}".rstrip("0")
    return f"${text}{'0' * (2 - len(text.split('.')[1]))}" if "." in text else f"${text}"


def _hours(value: float) -> str:
    return f"{value:g}" if value == int(value) else f"{value:.2f}".rstrip("0")


def format_table(result: Estimate) -> str:
    """The human-readable report: inputs, one line per active-hours figure, break-even."""
    gpus = f"{result.gpu_count} × {result.gpu_type}" + (f" × {result.replicas} replicas" if result.replicas > 1 else "")
    wakes = "one per active hour" if result.wakes_per_day is None else _hours(result.wakes_per_day)
    idle = f"{result.idle_timeout_seconds} s" + (
        " (assumed; the stack is always on)" if result.idle_timeout_assumed else ""
    )
    lines = [
        f"{result.stack or 'stack'}: {result.target}, {gpus}",
        f"  GPU price   {_rate(result.gpu_hourly)}/h per GPU — {result.gpu_price_basis}"
        + (f" ({result.provider})" if result.gpu_price_basis == "table" else "")
        + f", {result.gpu_price_date}: {result.gpu_price_source}",
        f"  deployment  {_rate(result.deployment_hourly)}/h while the GPU runs; wrapper {_rate(result.wrapper_hourly)}/h,"
        " always on",
        f"  tail/wake   idle timeout {idle} + node release {result.node_release_seconds:g} s"
        f" + cold start {result.cold_start_seconds:g} s = {result.tail_seconds / 60:.1f} min billed per wake;"
        f" wakes/day: {wakes}",
        "",
        f"  {'active h/day':>12}  {'wakes':>5}  {'GPU h/day':>9}  {'scale-to-zero/mo':>16}  {'always-on/mo':>12}  {'saving':>6}",
    ]
    for row in result.rows:
        lines.append(
            f"  {_hours(row.active_hours_per_day):>12}  {_hours(row.wakes_per_day):>5}  {row.gpu_hours_per_day:>9.2f}"
            f"  {_money(row.scale_to_zero_monthly):>16}  {_money(row.always_on_monthly):>12}  {round(row.saving * 100, 1) + 0.0:>5.1f}%"
        )
    lines += [
        "",
        f"  break-even: {result.break_even_active_hours_per_day:.2f} active h/day — from there the GPU is billed all day"
        " anyway; scaling to zero saves nothing and adds cold starts: run always-on.",
        f"  formula: scale-to-zero = wrapper × 24 h × {result.days_per_month:g} d + deployment × GPU h/day × "
        f"{result.days_per_month:g} d; GPU h/day = min(24, active + wakes × tail); always-on = (deployment + wrapper)"
        f" × 24 h × {result.days_per_month:g} d",
    ]
    if result.worst_case_monthly is not None:
        lines.append(
            f"  worst case: {_money(result.worst_case_monthly)}/mo — at most {result.max_containers} GPU container(s)"
            f" (modal.maxContainers) busy all month; one request holds a container at most"
            f" {result.request_timeout_seconds} s (modal.functionTimeout)"
        )
    lines += [f"  note: {note}" for note in result.notes]
    return "\n".join(lines)


# --------------------------------------------------------------------- command


def _parse_hours(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(f"{text!r}: give active hours per day as numbers, e.g. 1,2,4,8") from None
    if not values or any(not 0 <= v <= HOURS_PER_DAY for v in values):
        raise typer.BadParameter("active hours per day must be numbers within 0…24")
    return values


DEFAULT_HOURS_TEXT = ",".join(f"{hour:g}" for hour in DEFAULT_HOURS)


def cost_command(
    stack: Annotated[str, typer.Argument(help="Stack name: stacks/Pulumi.<STACK>.yaml")],
    stacks_dir: Annotated[Path | None, typer.Option("--stacks-dir", help="Where the stack files live")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the estimate as JSON")] = False,
    hours: Annotated[
        str, typer.Option("--hours", help="Active hours per day to show, comma-separated")
    ] = DEFAULT_HOURS_TEXT,
    provider: Annotated[
        str | None,
        typer.Option("--provider", help="Price table provider (default: cost.provider, else the table's default)"),
    ] = None,
    gpu_hourly: Annotated[
        float | None, typer.Option("--gpu-hourly", min=0, help="Price of one GPU per hour (overrides cost.gpuHourly)")
    ] = None,
    quoted: Annotated[
        str | None, typer.Option("--quoted", help="Price the deployment with a quoted figure, e.g. seed-8b-autoscale")
    ] = None,
    wrapper_hourly: Annotated[
        float | None, typer.Option("--wrapper-hourly", min=0, help="The wrapper's cost per hour")
    ] = None,
    idle_timeout: Annotated[
        float | None,
        typer.Option("--idle-timeout", min=0, help="Seconds idle before the GPU is released (default: the stack's)"),
    ] = None,
    cold_start: Annotated[
        float, typer.Option("--cold-start", min=0, help="Seconds of billed GPU time per wake while vLLM starts")
    ] = DEFAULT_COLD_START_SECONDS,
    node_release: Annotated[
        float | None,
        typer.Option(
            "--node-release", min=0, help="Seconds a node outlives its pod (default: 600 on Kubernetes, 0 on Modal)"
        ),
    ] = None,
    wakes_per_day: Annotated[
        float | None,
        typer.Option(
            "--wakes-per-day",
            min=0,
            help="Wakes per day (default: one per active hour; 0: the quoted table's arithmetic)",
        ),
    ] = None,
) -> None:
    """Monthly cost always-on vs scaled to zero at a range of active hours per day, and the break-even."""
    try:
        config = load_stack(stack, stacks_dir or STACKS_DIR)
        result = estimate(
            config,
            stack,
            hours=_parse_hours(hours),
            provider=provider,
            gpu_hourly=gpu_hourly,
            quoted=quoted,
            wrapper_hourly=wrapper_hourly,
            idle_timeout=idle_timeout,
            cold_start=cold_start,
            node_release=node_release,
            wakes_per_day=wakes_per_day,
        )
    except (ConfigError, CostError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2))
    else:
        typer.echo(format_table(result))


def register(app: typer.Typer) -> None:
    app.command("cost")(cost_command)
