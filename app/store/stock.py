"""What the stock broadcaster reads and hears in Redis.

Every script that changes a drop's available stock sets the drop's `dirty` flag and,
when the flag was clear, publishes the drop id on the stock channel. The broadcaster
(app/background/broadcaster.py) listens on that channel, takes each dirty drop's value
at send time (stock_take.lua clears the flag), and after a gap in leadership looks for
the flags left set.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from app.store import keys
from app.store.channels import database_of, stock_dirty_channel
from app.store.scripts import ScriptName


class StockFeed:
    """`scripts`: the process's Scripts, or anything with its `script(name)` (tests slow it)."""

    def __init__(self, redis: Redis, scripts: Any) -> None:
        self.redis = redis
        self.scripts = scripts
        self.channel = stock_dirty_channel(database_of(redis))

    @asynccontextmanager
    async def changes(self) -> AsyncIterator[PubSub]:
        """A subscription to the stock channel; its messages carry drop ids."""
        async with self.redis.pubsub(ignore_subscribe_messages=True) as pubsub:
            await pubsub.subscribe(self.channel)
            yield pubsub

    async def dirty_drops(self) -> list[str]:
        """Drops with a change not yet pushed (their flag is still set)."""
        ids = cast(list[str], await self.redis.zrange(keys.DROP_INDEX, 0, -1))
        if not ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for drop_id in ids:
            pipe.hget(keys.DropKeys(drop_id).drop, "dirty")
        flags = await pipe.execute()
        return [drop_id for drop_id, flag in zip(ids, flags, strict=True) if flag]

    async def take(self, drop_id: str) -> tuple[int, dict[str, int] | None]:
        """The drop's available stock now, and each size's on a sized drop, clearing its
        flag; negative when the drop is gone."""
        take = self.scripts.script(ScriptName.STOCK_TAKE)
        drop_keys = keys.DropKeys(drop_id)
        reply = await take(keys=[drop_keys.drop, drop_keys.sizes])
        return int(reply[0]), size_levels(reply[1:])


def size_levels(pairs: list[Any]) -> dict[str, int] | None:
    """{label: available} from a flat [label, available, ...] reply; None: no sizes."""
    if not pairs:
        return None
    return {str(pairs[i]): max(int(pairs[i + 1]), 0) for i in range(0, len(pairs), 2)}
