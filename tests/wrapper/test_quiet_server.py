"""The wrapper's uvicorn server wakes once a second at rest, and at once when told to stop."""

from __future__ import annotations

import asyncio
import signal

import uvicorn

from wrapper.server import QuietServer


async def _app(scope, receive, send) -> None:  # never called: the server is not started
    raise AssertionError("no request expected")


def _server(tick_seconds: float) -> tuple[QuietServer, list[int]]:
    server = QuietServer(uvicorn.Config(_app, log_config=None))
    server.tick_seconds = tick_seconds
    ticks: list[int] = []

    async def on_tick(counter: int) -> bool:
        ticks.append(counter)
        return server.should_exit

    server.on_tick = on_tick  # type: ignore[method-assign]
    return server, ticks


def test_a_stop_signal_ends_the_main_loop_without_waiting_for_the_next_tick() -> None:
    # A tick an hour away: the loop ends only if the signal itself wakes it (else pytest-timeout).
    server, ticks = _server(tick_seconds=3600)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        loop.call_soon(server.handle_exit, signal.SIGTERM, None)
        await server.main_loop()

    asyncio.run(run())
    assert server.should_exit
    assert len(ticks) == 2  # the first tick, then the one the signal woke


def test_every_tick_renews_the_date_header() -> None:
    # uvicorn's on_tick renews the date only when its counter is a multiple of 10 (it expected
    # ten ticks a second): every tick of this server must pass such a counter.
    server, ticks = _server(tick_seconds=0)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        task = loop.create_task(server.main_loop())
        while len(ticks) < 5:
            await asyncio.sleep(0)
        server.handle_exit(signal.SIGTERM, None)
        await task

    asyncio.run(run())
    assert all(counter % 10 == 0 for counter in ticks)
