from __future__ import annotations

from tests.helm.conftest import chart  # noqa: F401  (the real Helm engine, loaded once)
