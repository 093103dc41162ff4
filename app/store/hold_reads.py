"""Reads and scans of the holds of a drop, outside the scripts.

Everything that changes a hold goes through a script (app/store/holds.py). What
the sweeper, the reconciler and the services need besides is here: the raw entry
of a hold, the ids a drop holds, the earliest deadline per drop (asked in one
round trip per chunk of drops), and forgetting ended holds past their retention.
HoldStore inherits these, so callers hold one store for holds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from redis.asyncio import Redis

from app.batches import chunks
from app.store.client import ServerStart, redis_now_ms, server_start, server_started_ms
from app.store.keys import DropKeys, HoldRef
from app.store.scripts import Scripts


class HoldReads:
    redis: Redis
    scripts: Scripts

    async def now_ms(self) -> int:
        """Redis's clock: every deadline is written in it."""
        return await redis_now_ms(self.redis)

    async def server_start(self) -> ServerStart:
        return await server_start(self.redis)

    async def server_started_ms(self) -> int:
        return await server_started_ms(self.redis)

    async def entry(self, ref: HoldRef) -> str | None:
        """The raw entry of a live hold (`STATE|user|expires|created|extra`), or None."""
        value = await self.redis.hget(DropKeys(ref.drop_id).holds, ref.hold_id)
        return None if value is None else str(value)

    async def entries(self, drop_id: str, hold_ids: list[str]) -> list[str | None]:
        return cast(list[str | None], await self.redis.hmget(DropKeys(drop_id).holds, hold_ids))

    async def hold_ids(self, drop_id: str) -> list[str]:
        """The ids of every live hold of a drop (ACTIVE or PURCHASING)."""
        return cast(list[str], await self.redis.hkeys(DropKeys(drop_id).holds))

    async def live_holds_of(
        self, drop_ids: list[str], user_id: str
    ) -> list[tuple[str, str, str | None]]:
        """(hold id, raw hold entry, size label or None) of one user's live holds, in two
        round trips."""
        if not drop_ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for drop_id in drop_ids:
            pipe.smembers(DropKeys(drop_id).user_holds(user_id))
        id_sets = cast(list[set[str]], await pipe.execute())
        wanted = [(d, sorted(ids)) for d, ids in zip(drop_ids, id_sets, strict=True) if ids]
        if not wanted:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for drop_id, ids in wanted:
            keys = DropKeys(drop_id)
            pipe.hmget(keys.holds, ids)
            pipe.hmget(keys.hold_sizes, ids)
            pipe.hgetall(keys.sizes)  # empty for a drop without sizes
        replies = await pipe.execute()
        found: list[tuple[str, str, str | None]] = []
        for n, (_, ids) in enumerate(wanted):
            entries, indexes, sizes = replies[3 * n : 3 * n + 3]
            for rid, entry, index in zip(ids, entries, indexes, strict=True):
                if entry:
                    found.append((rid, entry, sizes.get(f"l:{index}") if index else None))
        return found

    async def closed_entry(self, ref: HoldRef) -> str | None:
        value = await self.redis.hget(DropKeys(ref.drop_id).closed, ref.hold_id)
        return cast(str | None, value)

    async def earliest_due(self, drop_ids: list[str], chunk: int) -> dict[str, float | None]:
        """Each drop's earliest hold deadline (None: nothing held)."""
        return await self._earliest(drop_ids, chunk, lambda k: k.due)

    async def earliest_closed(self, drop_ids: list[str], chunk: int) -> dict[str, float | None]:
        """Each drop's oldest ended hold (None: none kept)."""
        return await self._earliest(drop_ids, chunk, lambda k: k.closed_at)

    async def _earliest(
        self, drop_ids: list[str], chunk: int, zset_of: Callable[[DropKeys], str]
    ) -> dict[str, float | None]:
        """Each drop's lowest score in its sorted set `zset_of`, `chunk` drops a round trip."""
        earliest: dict[str, float | None] = {}
        for part in chunks(drop_ids, chunk):
            pipe = self.redis.pipeline(transaction=False)
            for drop_id in part:
                pipe.zrange(zset_of(DropKeys(drop_id)), 0, 0, withscores=True)
            firsts = cast(list[list[tuple[str, float]]], await pipe.execute())
            for drop_id, first in zip(part, firsts, strict=True):
                earliest[drop_id] = first[0][1] if first else None
        return earliest

    async def due_ids(self, drop_id: str, now_ms: int, limit: int) -> list[str]:
        """Up to `limit` ids of holds whose deadline is at or before `now_ms`."""
        due = await self.redis.zrangebyscore(
            DropKeys(drop_id).due, "-inf", now_ms, start=0, num=limit
        )
        return cast(list[str], due)

    async def forget_due(self, ref: HoldRef) -> None:
        """Drop a due entry that has no live hold (a partial state after a restore)."""
        await self.redis.zrem(DropKeys(ref.drop_id).due, ref.hold_id)

    async def prune_closed(self, drop_id: str, cutoff_ms: int, limit: int) -> int:
        """Forget up to `limit` ended holds closed at or before `cutoff_ms`; returns how many."""
        keys = DropKeys(drop_id)
        old = cast(
            list[str],
            await self.redis.zrangebyscore(keys.closed_at, "-inf", cutoff_ms, start=0, num=limit),
        )
        if old:
            pipe = self.redis.pipeline(transaction=True)
            pipe.hdel(keys.closed, *old)
            pipe.zrem(keys.closed_at, *old)
            await pipe.execute()
        return len(old)
