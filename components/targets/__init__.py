"""Where a stack runs: each target is a module behind one small interface, chosen here only.

`target_of(config)` is the one place a stack's `target:` is looked at. The program, the CLI,
the cost estimate and the smoke check ask the target what it can do (declare objects, be
port-forwarded to, keep GPUs warm) instead of comparing the target's name.

Importing this package imports no Pulumi SDK: a target loads its Pulumi components only in
`deploy`, so the CLI stays quick.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from components.targets import kubernetes, modal
from components.targets.base import CostBounds, KeptWarm, Target, WrapperService

if TYPE_CHECKING:
    from components.config import StackConfig

__all__ = ["TARGETS", "CostBounds", "KeptWarm", "Target", "WrapperService", "target_of"]

# Every target, by the name a stack's `target:` gives (components/config.py lists the same names).
TARGETS: dict[str, Target] = {target.name: target for target in (kubernetes.TARGET, modal.TARGET)}


def target_of(config: StackConfig) -> Target:
    return TARGETS[config.target]
