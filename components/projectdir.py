"""Where the user stands: the stack files of the project in the current directory, and paths
shown the way the user would type them."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

# The checkout this package runs from (an editable install): the stacks it ships.
CHECKOUT_STACKS_DIR = Path(__file__).resolve().parent.parent / "stacks"


def stacks_dir_for(cwd: Path) -> Path:
    """A Pulumi project in ``cwd`` (it holds Pulumi.yaml) keeps its stack files in its
    ``stackConfigDir``, else beside Pulumi.yaml, as the Pulumi CLI reads them
    (https://www.pulumi.com/docs/iac/concepts/projects/project-file/: "stackConfigDir");
    elsewhere the checkout's own ``stacks/``."""
    project = cwd / "Pulumi.yaml"
    if not project.is_file():
        return CHECKOUT_STACKS_DIR
    try:
        settings = yaml.safe_load(project.read_text()) or {}
    except yaml.YAMLError:
        settings = {}
    config_dir = settings.get("stackConfigDir") if isinstance(settings, dict) else None
    return cwd / config_dir if isinstance(config_dir, str) and config_dir else cwd


def shown(path: Path, cwd: Path | None = None) -> str:
    """``path`` as the user would write it: relative when it lies under the current
    directory, else absolute."""
    here = (cwd or Path.cwd()).resolve()
    target = Path(os.path.abspath(path))
    try:
        return str(target.relative_to(here))
    except ValueError:
        return str(target)
