"""Run ``async def`` tests on a fresh asyncio loop each (no plugin needed)."""

from __future__ import annotations

import asyncio
import inspect

import pytest

_spare: asyncio.AbstractEventLoop | None = None


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    global _spare
    args = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    with asyncio.Runner() as runner:
        runner.run(asyncio.wait_for(pyfuncitem.obj(**args), 30))
    # Leave a usable current loop behind (later suites, e.g. Pulumi's mocks, expect one).
    if _spare is None:
        _spare = asyncio.new_event_loop()
    asyncio.set_event_loop(_spare)
    return True
