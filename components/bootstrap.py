"""`vllm-deploy bootstrap`: a team's one-time setup of its shared Pulumi backend.

Logs in to the team's backend, creates every stack (all stack files but `local`) with its own
secrets provider (a cloud KMS key or a passphrase per environment), sets each stack's secrets
from files or stdin, and says which stack files to commit. Safe to run again: existing stacks are
kept, and an existing secret is never overwritten without `--force`.

Everything goes through the `pulumi` CLI as a subprocess; secret values travel on its stdin only
(`pulumi config set --secret KEY` reads the value from stdin when none is given), never in an
argument, a log line or this process's output.
"""

from __future__ import annotations

import json
import os
import secrets as random_secrets
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer
import yaml

from components.config import PROJECT, SECRET_KEYS, ConfigError
from components.stackfile import STACKS_DIR, load_stack, stack_names, stack_path

LOCAL_STACK = "local"
STDIN = "-"
PULUMI_CLOUD = "https://api.pulumi.com"


class BootstrapError(Exception):
    """Bad input, found before anything is created: one line per problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


@dataclass(frozen=True)
class Plan:
    """What the user asked for, checked: which stacks, with which provider, from which sources."""

    backend: str
    stacks: list[str]
    providers: dict[str, str]  # stack → "passphrase" | "default" | "awskms://…" | "gcpkms://…" | …
    passphrase_files: dict[str, Path]  # stack → its passphrase file (else the environment's)
    sources: dict[tuple[str, str], str]  # (stack, key) → a file path, or "-" for stdin
    force: bool = False


@dataclass
class Outcome:
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    changed_files: list[Path] = field(default_factory=list)


Runner = Callable[..., subprocess.CompletedProcess[str]]


def _split(spec: str, what: str, problems: list[str]) -> tuple[str, str] | None:
    name, sep, value = spec.partition("=")
    if not sep or not name or not value:
        problems.append(f"{what} {spec!r}: expected NAME=VALUE")
        return None
    return name, value


def make_plan(
    backend: str | None,
    stacks: Sequence[str],
    provider_specs: Sequence[str],
    passphrase_specs: Sequence[str],
    secret_specs: Sequence[str],
    secrets_dir: Path | None,
    force: bool,
    stacks_dir: Path,
) -> Plan:
    problems: list[str] = []
    url = backend or os.environ.get("PULUMI_BACKEND_URL", "")
    if not url:
        problems.append(
            "--backend: the team's shared backend is needed, e.g. s3://team-pulumi-state, gs://…, azblob://… "
            f"or {PULUMI_CLOUD} (a file:// backend is not shared with CI)"
        )
    known = [s for s in stack_names(stacks_dir) if s != LOCAL_STACK]
    chosen = list(stacks) or known
    for name in chosen:
        if name == LOCAL_STACK:
            problems.append("--stack local: the laptop stack is not bootstrapped (`make up` creates it)")
        elif name not in known:
            problems.append(f"--stack {name}: no stacks/Pulumi.{name}.yaml (stacks: {', '.join(known)})")
    chosen = [s for s in chosen if s in known]

    default_provider = "default" if url.startswith(PULUMI_CLOUD) else "passphrase"
    providers = dict.fromkeys(chosen, default_provider)
    for spec in provider_specs:
        if "://" in spec.partition("=")[0] or "=" not in spec:  # one provider for every stack
            providers = dict.fromkeys(chosen, spec)
            continue
        if pair := _split(spec, "--secrets-provider", problems):
            if pair[0] not in providers:
                problems.append(f"--secrets-provider {spec!r}: {pair[0]} is not a stack being bootstrapped")
            else:
                providers[pair[0]] = pair[1]

    passphrase_files: dict[str, Path] = {}
    for spec in passphrase_specs:
        if pair := _split(spec, "--passphrase-file", problems):
            path = Path(pair[1]).expanduser()
            if pair[0] not in providers:
                problems.append(f"--passphrase-file {spec!r}: {pair[0]} is not a stack being bootstrapped")
            elif not path.is_file() or not path.read_text().strip():
                problems.append(f"--passphrase-file {spec!r}: {path} is missing or empty")
            else:
                passphrase_files[pair[0]] = path

    sources: dict[tuple[str, str], str] = {}
    if secrets_dir is not None:  # <dir>/<stack>/<key>
        for name in chosen:
            for key in SECRET_KEYS:
                if (secrets_dir / name / key).is_file():
                    sources[(name, key)] = str(secrets_dir / name / key)
    for spec in secret_specs:
        if not (pair := _split(spec, "--secret", problems)):
            continue
        target, source = pair
        stack, _, key = target.rpartition(":")
        if key not in SECRET_KEYS:
            problems.append(f"--secret {spec!r}: {key!r} is not a secret of the stacks ({', '.join(SECRET_KEYS)})")
            continue
        if stack and stack not in providers:
            problems.append(f"--secret {spec!r}: {stack} is not a stack being bootstrapped")
            continue
        if source != STDIN and not Path(source).expanduser().is_file():
            problems.append(f"--secret {spec!r}: no file {source}")
            continue
        for name in [stack] if stack else chosen:
            sources[(name, key)] = source if source == STDIN else str(Path(source).expanduser())
    if sum(spec.endswith("=" + STDIN) for spec in secret_specs) > 1:
        problems.append("--secret …=-: stdin holds one value; give the others as files")

    for name, provider in providers.items():
        if provider == "passphrase" and name not in passphrase_files:
            passphrase = os.environ.get("PULUMI_CONFIG_PASSPHRASE")
            passphrase_file = os.environ.get("PULUMI_CONFIG_PASSPHRASE_FILE")
            if not passphrase and not passphrase_file:
                problems.append(
                    f"{name}: a passphrase secrets provider needs a passphrase: --passphrase-file {name}=PATH "
                    "(or PULUMI_CONFIG_PASSPHRASE_FILE), never an empty one; or --secrets-provider "
                    f"{name}=awskms://alias/…"
                )
    if problems:
        raise BootstrapError(problems)
    return Plan(url, chosen, providers, passphrase_files, sources, force)


def _read_stack_file(stack: str, stacks_dir: Path) -> dict:
    path = stack_path(stack, stacks_dir)
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def _read_secret(path: str) -> str:
    return Path(path).read_text().rstrip("\r\n")  # a file's final newline is not part of the value


class Bootstrap:
    """Runs a checked Plan against the `pulumi` CLI."""

    def __init__(
        self, plan: Plan, project_dir: Path, run: Runner = subprocess.run, stdin: Callable[[], str] = sys.stdin.read
    ) -> None:
        self.plan, self.project_dir, self._run, self._stdin = plan, project_dir, run, stdin
        self.stacks_dir = project_dir / "stacks"
        self._stdin_value: str | None = None

    def _env(self, stack: str | None = None) -> dict[str, str]:
        env = {**os.environ, "PULUMI_BACKEND_URL": self.plan.backend}
        if stack and stack in self.plan.passphrase_files:
            env.pop("PULUMI_CONFIG_PASSPHRASE", None)
            env["PULUMI_CONFIG_PASSPHRASE_FILE"] = str(self.plan.passphrase_files[stack])
        return env

    def pulumi(
        self, *args: str, stack: str | None = None, value: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return self._run(
            ["pulumi", "--non-interactive", *args],
            cwd=self.project_dir,
            env=self._env(stack),
            input=value or "",
            capture_output=True,
            text=True,
        )  # never our stdin

    def _stdin_once(self) -> str:
        if self._stdin_value is None:
            self._stdin_value = self._stdin()
        return self._stdin_value

    def existing_stacks(self) -> set[str]:
        result = self.pulumi("stack", "ls", "--json")
        if result.returncode != 0:
            raise BootstrapError([f"`pulumi stack ls` failed: {result.stderr.strip()}"])
        return {str(entry["name"]).rsplit("/", 1)[-1] for entry in json.loads(result.stdout or "[]")}

    def run(self) -> Outcome:
        outcome = Outcome()
        login = self.pulumi("login", self.plan.backend)
        if login.returncode != 0:
            outcome.problems.append(f"`pulumi login {self.plan.backend}` failed: {login.stderr.strip()}")
            return outcome
        outcome.lines.append(f"logged in to {self.plan.backend}")
        existing = self.existing_stacks()
        for stack in self.plan.stacks:
            before = stack_path(stack, self.stacks_dir).read_bytes()
            self._stack(stack, stack in existing, outcome)
            if stack_path(stack, self.stacks_dir).read_bytes() != before:
                outcome.changed_files.append(stack_path(stack, self.stacks_dir))
        return outcome

    def _stack(self, stack: str, exists: bool, outcome: Outcome) -> None:
        provider = self.plan.providers[stack]
        if exists:
            outcome.lines.append(
                f"{stack}: exists (its secrets provider is kept; `pulumi stack change-secrets-provider` changes it)"
            )
        else:
            args = ["stack", "init", stack] + ([] if provider == "default" else ["--secrets-provider", provider])
            result = self.pulumi(*args, stack=stack)
            if result.returncode != 0:
                outcome.problems.append(f"{stack}: `pulumi stack init` failed: {result.stderr.strip()}")
                return
            outcome.lines.append(f"{stack}: created with secrets provider {provider}")
        try:
            gated = load_stack(stack, self.stacks_dir).model.gated
        except ConfigError as error:
            outcome.problems.append(f"{stack}: {error}")
            return
        config = _read_stack_file(stack, self.stacks_dir).get("config") or {}
        for key in SECRET_KEYS:
            self._secret(stack, key, f"{PROJECT}:{key}" in config, gated, outcome)

    def _secret(self, stack: str, key: str, present: bool, gated: bool, outcome: Outcome) -> None:
        source = self.plan.sources.get((stack, key))
        if present and not self.plan.force:
            note = " (given, not overwritten: --force replaces it)" if source else ""
            outcome.lines.append(f"{stack}: {key} already set{note}")
            return
        if source is not None:
            value = self._stdin_once() if source == STDIN else _read_secret(source)
            origin = "stdin" if source == STDIN else source
        elif key == "vllmApiKey" and not present:
            value, origin = random_secrets.token_urlsafe(32), "generated"  # only vLLM and the wrapper use it
        elif key == "hfToken" and gated and not present:
            outcome.problems.append(f"{stack}: hfToken is required for its gated model: --secret {stack}:hfToken=FILE")
            return
        else:
            return  # optional (wrapperApiKey), or present and nothing new given
        value = value.rstrip("\r\n")
        if not value:
            outcome.problems.append(f"{stack}: {key} from {origin} is empty")
            return
        result = self.pulumi(
            "config", "set", "--secret", "--stack", stack, f"{PROJECT}:{key}", stack=stack, value=value
        )
        if result.returncode != 0:
            outcome.problems.append(f"{stack}: setting {key} failed: {result.stderr.strip()}")
            return
        outcome.lines.append(f"{stack}: {key} set from {origin}")


SECRET_HELP = "[STACK:]KEY=FILE, FILE '-' = stdin; KEY: hfToken, vllmApiKey, wrapperApiKey"
ProviderOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--secrets-provider",
        help="PROVIDER for every stack, or STACK=PROVIDER: passphrase, default "
        "(Pulumi Cloud), awskms://alias/NAME?region=R, gcpkms://…, azurekeyvault://…, hashivault://…",
    ),
]


def bootstrap_command(
    backend: Annotated[
        str | None,
        typer.Option(
            help=f"The team's backend: s3://…, gs://…, azblob://…, {PULUMI_CLOUD} (default: $PULUMI_BACKEND_URL)"
        ),
    ] = None,
    stack: Annotated[
        list[str] | None, typer.Option(help="Only these stacks (default: every stack file but local)")
    ] = None,
    secrets_provider: ProviderOpt = None,
    passphrase_file: Annotated[list[str] | None, typer.Option(help="STACK=PATH: that stack's passphrase")] = None,
    secret: Annotated[list[str] | None, typer.Option(help=SECRET_HELP)] = None,
    secrets_dir: Annotated[Path | None, typer.Option(help="Read DIR/<stack>/<key> files")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite secrets that are already set")] = False,
    project_dir: Annotated[Path, typer.Option(help="The directory holding Pulumi.yaml")] = STACKS_DIR.parent,
) -> None:
    """Once per team: create every stack in the shared backend with its own secrets provider; set its secrets."""
    try:
        plan = make_plan(
            backend,
            stack or [],
            secrets_provider or [],
            passphrase_file or [],
            secret or [],
            secrets_dir,
            force,
            project_dir / "stacks",
        )
        outcome = Bootstrap(plan, project_dir).run()
    except BootstrapError as error:
        for problem in error.problems:
            typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(2) from None
    for line in outcome.lines:
        typer.echo(line)
    for problem in outcome.problems:
        typer.echo(f"error: {problem}", err=True)
    if outcome.changed_files:
        files = " ".join(str(p.relative_to(project_dir)) for p in outcome.changed_files)
        typer.echo(
            f"commit them (salts, keys and encrypted secrets only): git add {files} && git commit -m 'Bootstrap stacks'"
        )
    if outcome.problems:
        raise typer.Exit(1)
