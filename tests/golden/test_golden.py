"""Every rendered object, chart output, Helm values file, Modal spec and CLI answer of the shipped
stacks is pinned: a change to any of them shows here as a diff, to be made on purpose.

After a deliberate change: `make golden` (rewrites tests/golden/files/) and say why in the commit.
"""

from __future__ import annotations

from tests.golden.snapshot import FILES, differences


def test_outputs_equal_the_golden_files():
    found = differences(FILES)
    assert not found, "outputs changed (run `make golden` if on purpose):\n" + "".join(found[:200])
