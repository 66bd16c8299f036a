"""The loop both scalers run: one tick, then a sleep, for ever; a bug in a tick is logged and the
loop goes on (a scaler that stops would leave vLLM at whatever count it last had)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable


async def every(
    seconds: float,
    tick: Callable[[], Awaitable[object]],
    sleep: Callable[[float], Awaitable[None]],
    log: logging.Logger,
    what: str,
) -> None:
    while True:
        try:
            await tick()
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug must not stop the loop
            log.exception("%s loop error", what)
        await sleep(seconds)
