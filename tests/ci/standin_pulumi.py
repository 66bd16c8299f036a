"""A stand-in `pulumi` CLI for tests: records each call and writes what the real CLI would write.

Installed as `pulumi` on PATH by `conftest.py`. Modelled on the Pulumi CLI 3.x (pulumi/pulumi):
- `pulumi stack init/select --create` with the passphrase provider writes `encryptionsalt:` into the
  stack's file (`stackConfigDir`/Pulumi.<stack>.yaml); a KMS provider writes `secretsprovider:` and
  `encryptedkey:` (pkg/secrets/passphrase, pkg/secrets/cloud). Non-interactive without
  PULUMI_CONFIG_PASSPHRASE(_FILE) it fails ("passphrase must be set with …"); an empty
  PULUMI_CONFIG_PASSPHRASE is accepted, which is the trap under test.
- `pulumi config set --secret KEY` with no value reads it from stdin and writes `KEY: {secure: …}`.
- `pulumi config get KEY` exits non-zero when the key is not set.
- `pulumi stack select NAME` exits non-zero when the backend has no such stack.
$STANDIN_FAIL makes `preview`/`up` print it and fail, as the engine does on an error.
The salt it writes says whether the passphrase was empty (EMPTY-PASSPHRASE), so a test can tell.
Each call is a JSON line in $STANDIN_LOG: argv, cwd, the backend env and whether a passphrase was set;
the backend's stacks live in $STANDIN_BACKEND (a JSON file).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import yaml

EMPTY_MARK = "EMPTY-PASSPHRASE"


def passphrase() -> str | None:
    if path := os.environ.get("PULUMI_CONFIG_PASSPHRASE_FILE"):
        return Path(path).read_text().strip()
    return os.environ.get("PULUMI_CONFIG_PASSPHRASE")


def fingerprint(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def option(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def default_provider() -> str:
    """Pulumi Cloud's default is its own per-stack key; every other backend's, a passphrase."""
    url = os.environ.get("PULUMI_BACKEND_URL") or ""
    return "default" if url.startswith("https://") else "passphrase"


def stack_file(stack: str) -> Path:
    project = yaml.safe_load(Path("Pulumi.yaml").read_text())
    return Path(project.get("stackConfigDir", ".")) / f"Pulumi.{stack}.yaml"


def load(path: Path) -> dict:
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def main() -> int:
    args = [a for a in sys.argv[1:] if a != "--non-interactive"]
    state_path = Path(os.environ["STANDIN_BACKEND"])
    state = json.loads(state_path.read_text()) if state_path.is_file() else {"stacks": [], "current": None}
    stdin = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
    record = {
        "argv": args,
        "cwd": os.getcwd(),
        "PULUMI_BACKEND_URL": os.environ.get("PULUMI_BACKEND_URL"),
        "passphrase": None if passphrase() is None else ("empty" if passphrase() == "" else "set"),
        "stdin_sha": fingerprint(stdin) if stdin else None,
    }
    with open(os.environ["STANDIN_LOG"], "a") as log:
        log.write(json.dumps(record) + "\n")

    def create(stack: str, provider: str) -> int:
        path = stack_file(stack)
        document = load(path)
        if provider == "default":  # Pulumi Cloud's service-managed key: nothing in the stack file
            pass
        elif provider == "passphrase":
            secret = passphrase()
            if secret is None:
                print(
                    "error: passphrase must be set with PULUMI_CONFIG_PASSPHRASE or "
                    "PULUMI_CONFIG_PASSPHRASE_FILE environment variables",
                    file=sys.stderr,
                )
                return 255
            document["encryptionsalt"] = "v1:standin:" + (EMPTY_MARK if secret == "" else fingerprint(secret))
        else:
            document["secretsprovider"] = provider
            document["encryptedkey"] = "standin-" + fingerprint(provider)
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        state["stacks"].append(stack)
        return 0

    code = 0
    match args:
        case ["login", url, *_]:
            state["login"] = url
        case ["stack", "ls", "--json", *_]:
            print(json.dumps([{"name": s, "current": s == state["current"]} for s in state["stacks"]]))
        case ["stack", "init", stack, *rest]:
            if stack in state["stacks"]:
                print(f"error: stack '{stack}' already exists", file=sys.stderr)
                return 255
            code = create(stack, option(rest, "--secrets-provider") or default_provider())
            state["current"] = stack
        case ["stack", "select", *rest]:
            stack = next(a for a in rest if not a.startswith("--") and a != option(rest, "--secrets-provider"))
            if stack not in state["stacks"]:
                if "--create" not in rest:
                    print(f"error: no stack named '{stack}' found", file=sys.stderr)
                    return 255
                code = create(stack, option(rest, "--secrets-provider") or default_provider())
            state["current"] = stack
        case ["config", "get", key, *rest]:
            stack = option(rest, "--stack") or state["current"]
            config = load(stack_file(stack)).get("config") or {}
            code = 0 if (key if ":" in key else f"vllm-deploy:{key}") in config else 255
        case ["config", "set", "--secret", *rest]:
            key = next(a for a in rest if not a.startswith("--") and a != option(rest, "--stack"))
            stack = option(rest, "--stack") or state["current"]
            path = stack_file(stack)
            document = load(path)
            if "encryptionsalt" in document and passphrase() is None:
                print("error: passphrase must be set", file=sys.stderr)
                return 255
            name = key if ":" in key else f"vllm-deploy:{key}"
            document.setdefault("config", {})[name] = {"secure": "v1:standin:" + fingerprint(stdin.rstrip("\n"))}
            path.write_text(yaml.safe_dump(document, sort_keys=False))
        case ["preview" | "up", *_]:
            if failure := os.environ.get("STANDIN_FAIL"):  # what the engine printed, for a failing run
                print(failure)
                return 255
            print("Resources:\n    + 3 to create\n")
        case ["stack", "output", "--json", *_]:
            print(json.dumps({"openai_base_url": "http://vllm-wrapper.vllm-dev:8001/v1", "hf_token": "[secret]"}))
        case _:
            pass
    state_path.write_text(json.dumps(state))
    return code


if __name__ == "__main__":
    raise SystemExit(main())
