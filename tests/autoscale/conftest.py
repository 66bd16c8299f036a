"""Run ``async def`` tests on a fresh asyncio loop each (the scaling suite's hook)."""

from tests.scaling.conftest import pytest_pyfunc_call  # noqa: F401
