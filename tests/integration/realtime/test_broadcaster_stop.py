"""No stock push outlives its broadcaster: after a stop nothing reads or sends any more.

A push left running after shutdown would use the app's Redis pools after they were
closed, reopening connections that nothing closes again.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from redis.asyncio import Redis

from app.background.broadcaster import Broadcaster
from app.store.keys import DropKeys
from app.store.scripts import Scripts

DROP = "00000000000000bb"


class StuckSocket:
    """Stands in for the Socket.IO server: a send starts and never finishes."""

    def __init__(self) -> None:
        self.sending = asyncio.Event()

    async def emit(self, event: str, data: Any) -> None:
        self.sending.set()
        await asyncio.Event().wait()


def pushes_alive() -> list[asyncio.Task[Any]]:
    """The broadcaster's push tasks still running; cancelled, so a failure leaves none behind."""
    alive = [
        task
        for task in asyncio.all_tasks()
        if not task.done() and "_push_after" in repr(task.get_coro())
    ]
    for task in alive:
        task.cancel()
    return alive


async def test_a_push_asked_to_go_again_does_not_run_after_the_stop(
    redis: Redis, scripts: Scripts
) -> None:
    socket = StuckSocket()
    broadcaster = Broadcaster(redis, scripts, socket, interval_ms=50)  # type: ignore[arg-type]
    running = asyncio.create_task(broadcaster.run())
    async with asyncio.timeout(5):
        await broadcaster.leading.wait()
        await redis.hset(DropKeys(DROP).drop, mapping={"avail": 3, "dirty": 1})  # type: ignore[misc]
        broadcaster.schedule(DROP)
        await socket.sending.wait()
    broadcaster.schedule(DROP)  # a change during the send: go again after it

    broadcaster.stopping.set()
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running

    assert pushes_alive() == []
    broadcaster.schedule(DROP)  # a late message after the stop starts nothing
    assert pushes_alive() == []
