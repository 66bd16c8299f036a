"""`vllm-deploy preflight STACK`: read-only checks of the target cluster before `pulumi up`.

The checks live in components/preflight.py; this module loads the stack, renders its
objects through its target and prints the report (or JSON, as `smoke --json` does).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from components.cli.common import DEFAULT_STACKS_DIR, StackArg, StacksDir, fail, load


def preflight(
    stack: StackArg,
    stacks_dir: StacksDir = DEFAULT_STACKS_DIR,
    context: Annotated[
        str | None, typer.Option("--context", help="kube context (default: kubernetes.context, else the current one)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON")] = False,
) -> None:
    """Check the cluster before `pulumi up`: context, GPU nodes, device plugin, storage, Pod Security, image, RBAC."""
    from components.preflight import (
        Kubectl,
        Needs,
        PreflightError,
        Report,
        format_report,
        run_checks,
    )
    from components.targets import target_of

    config = load(stack, Path(stacks_dir))
    objects = target_of(config).objects(config)
    if objects is None:
        raise fail(
            f"the stack targets {config.target}: it declares no Kubernetes objects, there is no cluster to check"
        )
    try:
        cluster = Kubectl(context or config.kubernetes.context)
    except PreflightError as error:
        if as_json:
            typer.echo(json.dumps({"ok": False, "error": str(error), "checks": []}, indent=2))
        raise fail(str(error)) from None
    name = cluster.current_context()
    report = Report(stack, name, run_checks(cluster, Needs.of(objects), name))
    typer.echo(json.dumps(report.to_json(), indent=2) if as_json else format_report(report))
    if not report.ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("preflight")(preflight)
