"""The broadcaster's spacing holds between sends, however long a read or a send takes."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from redis.asyncio import Redis

from app.background.broadcaster import Broadcaster
from app.store.keys import DropKeys
from app.store.scripts import Scripts

DROP = "00000000000000aa"
INTERVAL = 0.1


class SlowRedisReads:
    """Scripts whose stock_take answers after `seconds`, like a Redis under load."""

    def __init__(self, scripts: Scripts, seconds: float) -> None:
        self.inner = scripts
        self.seconds = seconds

    def script(self, name: Any) -> Any:
        run = self.inner.script(name)

        async def slow(**kwargs: Any) -> Any:
            delay = self.seconds if self.slow_next else 0.0
            self.slow_next = not self.slow_next  # every other read is slow
            await asyncio.sleep(delay)
            return await run(**kwargs)

        return slow

    slow_next = True


class SlowSocket:
    """Stands in for the Socket.IO server: each send takes `seconds` and is recorded."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.sends: list[tuple[float, float, Any]] = []

    async def emit(self, event: str, data: Any) -> None:
        started = time.monotonic()
        await asyncio.sleep(self.seconds)
        self.sends.append((started, time.monotonic(), data))


async def storm(redis: Redis, broadcaster: Broadcaster, changes: int) -> None:
    """Available stock falls by one every 10 ms, each change marking the drop dirty."""
    for available in range(changes, -1, -1):
        await redis.hset(DropKeys(DROP).drop, mapping={"avail": available, "dirty": 1})  # type: ignore[misc]
        broadcaster.schedule(DROP)
        await asyncio.sleep(0.01)


async def test_sends_of_a_drop_are_an_interval_apart(redis: Redis, scripts: Scripts) -> None:
    socket = SlowSocket(seconds=0.06)
    reads = SlowRedisReads(scripts, seconds=0.05)
    broadcaster = Broadcaster(redis, reads, socket, interval_ms=int(INTERVAL * 1000))  # type: ignore[arg-type]
    await storm(redis, broadcaster, changes=60)
    async with asyncio.timeout(5):
        while broadcaster._pending:
            await asyncio.gather(*broadcaster._pending.values())
    assert len(socket.sends) >= 4
    for (_, ended, _), (started, _, _) in zip(socket.sends, socket.sends[1:], strict=False):
        assert started - ended >= INTERVAL - 0.002  # end of one send to the start of the next
    assert socket.sends[-1][2] == {"dropId": DROP, "availableStock": 0}
