"""What the repository tells its users is true and public: no private history ("the seed", "the old
setup", "build machines"), no paths outside the repository, and one way to hand over a secret:
from a file or stdin, never typed on a command line (shell history, `ps`)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FORBIDDEN = {
    "private history": re.compile(r"\bthe seeds?\b|\bseed's\b|\bseeds\b|\bold setup\b|\bbuild machines?\b", re.I),
    "a path outside the repository": re.compile(r"/work/shared\b"),
    "a secret typed on the command line": re.compile(r"--from-literal=|config set --secret \w+ (?!< )\S"),
}
# wrapper/ README wording is reviewed with the wrapper's own changes; this file names the phrases.
SKIPPED = ("wrapper/", "tests/test_wording.py")


def tracked_text_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    paths = [ROOT / name for name in listed.decode().split("\0") if name and not name.startswith(SKIPPED)]
    texts = []
    for path in paths:
        try:
            path.read_text()
        except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
            continue
        texts.append(path)
    return texts


def test_no_private_wording_and_one_way_to_set_secrets() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{number}: {why}: {line.strip()}"
        for path in tracked_text_files()
        for number, line in enumerate(path.read_text().splitlines(), 1)
        for why, pattern in FORBIDDEN.items()
        if pattern.search(line)
    ]
    assert found == []


def test_the_secret_rule_tells_a_file_from_a_typed_value() -> None:
    typed = FORBIDDEN["a secret typed on the command line"]
    assert typed.search("pulumi config set --secret vllmApiKey <key>")
    assert typed.search("kubectl create secret generic s --from-literal=VLLM_API_KEY=abc")
    assert not typed.search("pulumi config set --secret hfToken < ~/.secrets/hf-token")
    assert not typed.search("kubectl create secret generic s -n ns --from-env-file=secrets.env")
