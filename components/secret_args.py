"""Which command-line flags would carry a secret (they show in `ps`, pod specs and state).

Standard library only: the Modal containers import it without the project's dependencies.
"""

from __future__ import annotations

SECRET_FLAGS = ("--api-key", "--hf-token", "--token", "--password")


def secret_flag(arg: object) -> str | None:
    """`--api_key=abc` → `--api-key`; None for an ordinary argument. vLLM accepts either spelling."""
    flag = str(arg).split("=", 1)[0].replace("_", "-")
    return flag if flag in SECRET_FLAGS else None
