"""Drop mirror and drop views in Redis.

The definition of a drop is copied from PostgreSQL into its hash (`def` field
plus what reserve.lua reads); counters are kept by the hold scripts. A view is
one pipelined round trip for any number of drops, no PostgreSQL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import cast

import orjson
from redis.asyncio import Redis

from app.batches import chunks
from app.domain import Access, DropCounters, DropDefinition, SizeFact, SizeStock, to_ms
from app.store.channels import database_of, stock_dirty_channel
from app.store.keys import (
    ACCESS_DROPS,
    DROP_INDEX,
    DROP_INDEX_LOADED,
    DROP_LISTING_VERSION,
    DropKeys,
)
from app.store.pipelined import PipelinedConnection
from app.store.scripts import ScriptName, Scripts

COUNTERS_CHUNK = 100  # drops whose counters are asked for together


class RebuildMode(StrEnum):
    INIT = "init"
    REPAIR = "repair"


class RebuildOutcome(StrEnum):
    BUILT = "BUILT"
    EXISTS = "EXISTS"
    BUSY = "BUSY"
    OVERSOLD = "OVERSOLD"


@dataclass(frozen=True, slots=True)
class SizeCount:
    """One size's counters as Redis has them, with its live holds (the reconciler's view)."""

    size: str
    total: int
    available: int
    sold: int
    live_holds: int


def _size_stock(fields: dict[str, str]) -> tuple[SizeStock, ...]:
    """A sized drop's per-size stock from its sizes hash, in the admin's order."""
    count = int(fields.get("n", 0))
    return tuple(
        SizeStock(fields[f"l:{i}"], int(fields[f"t:{i}"]), int(fields[f"a:{i}"]))
        for i in range(1, count + 1)
    )


@dataclass(frozen=True, slots=True)
class MirroredDrop:
    definition: DropDefinition
    counters: DropCounters


def _definition_args(drop: DropDefinition) -> list[str | int]:
    return [
        drop.to_json(),
        drop.per_user_limit,
        to_ms(drop.starts_at),
        to_ms(drop.ends_at) if drop.ends_at else 0,
        "1" if drop.cancelled else "0",
    ]


class DropStore:
    def __init__(
        self, redis: Redis, scripts: Scripts, pipelined: PipelinedConnection | None = None
    ) -> None:
        self.redis = redis
        self.scripts = scripts
        self.pipelined = pipelined
        self.stock_channel = stock_dirty_channel(database_of(redis))

    async def listing_version(self) -> str | None:
        """The storefront listing's version: it changes with every admin change of a drop.

        Read on every storefront request (through the pipelined connection when there is
        one: the cheapest round trip this process has).
        """
        if self.pipelined is not None:
            return cast(str | None, await self.pipelined.execute("GET", DROP_LISTING_VERSION))
        return cast(str | None, await self.redis.get(DROP_LISTING_VERSION))

    async def bump_listing_version(self) -> None:
        """Called after a change is mirrored, before it is acknowledged: every process's
        next storefront request then renders the list anew."""
        await self.redis.incr(DROP_LISTING_VERSION)

    async def sync(self, drop: DropDefinition) -> bool:
        """Copy a changed definition; False when the drop is not mirrored yet."""
        keys = DropKeys(drop.id)
        reply = await self.scripts.run(
            ScriptName.DROP_SYNC,
            [keys.drop],
            [*_definition_args(drop), self.stock_channel, drop.id],
        )
        if reply[0] == "MISSING":
            return False
        await self.redis.zadd(DROP_INDEX, {drop.id: to_ms(drop.starts_at)})
        return True

    async def rebuild(
        self,
        mode: RebuildMode,
        drop: DropDefinition,
        sold: int,
        purchases_by_user: dict[str, int],
        expected_sold: int | None = None,
        sizes: Sequence[SizeFact] = (),
        epoch: int = 0,
    ) -> tuple[RebuildOutcome, int]:
        """Build (or repair) a drop's counters, and its sizes' (`sizes`, in the admin's
        order), from PostgreSQL's facts. `epoch`: this rebuild's (0 for a drop just
        created). See drop_rebuild.lua."""
        keys = DropKeys(drop.id)
        pairs: list[str | int] = []
        for user_id, count in purchases_by_user.items():
            pairs += [user_id, count]
        (
            definition,
            limit,
            starts,
            ends,
            cancelled,
        ) = _definition_args(drop)
        reply = await self.scripts.run(
            ScriptName.DROP_REBUILD,
            [keys.drop, keys.users, keys.holds, keys.sizes, keys.hold_sizes],
            [
                mode.value,
                definition,
                drop.total_stock,
                limit,
                starts,
                ends,
                cancelled,
                sold,
                "" if expected_sold is None else expected_sold,
                self.stock_channel,
                drop.id,
                orjson.dumps([[f.size, f.total, f.sold] for f in sizes]).decode(),
                epoch,
                *pairs,
            ],
        )
        outcome = RebuildOutcome(reply[0])
        available = int(reply[1]) if len(reply) > 1 else -1
        if outcome in (RebuildOutcome.BUILT, RebuildOutcome.OVERSOLD):
            await self.redis.zadd(DROP_INDEX, {drop.id: to_ms(drop.starts_at)})
            if drop.access.access is not Access.OPEN:
                # The access leader admits, draws and settles the drops on this list.
                await self.redis.sadd(ACCESS_DROPS, drop.id)
        return outcome, available

    async def restock(self, drop_id: str, quantity: int, size: str | None = None) -> int | None:
        """Units added (to `size`, on a sized drop); the new available stock, or None when
        the drop (or that size) is not mirrored."""
        keys = DropKeys(drop_id)
        reply = await self.scripts.run(
            ScriptName.RESTOCK,
            [keys.drop, keys.sizes],
            [quantity, self.stock_channel, drop_id, size or ""],
        )
        return int(reply[1]) if reply[0] == "RESTOCKED" else None

    async def size_labels(self, drop_id: str) -> dict[str, str]:
        """A sized drop's size index -> label (empty for a drop without sizes)."""
        fields: dict[str, str] = await self.redis.hgetall(DropKeys(drop_id).sizes)  # type: ignore[assignment]
        return {name[2:]: value for name, value in fields.items() if name.startswith("l:")}

    async def index(self) -> list[str]:
        """Every mirrored drop id, ordered by startsAt."""
        return cast(list[str], await self.redis.zrange(DROP_INDEX, 0, -1))

    async def index_loaded(self) -> bool:
        return bool(await self.redis.exists(DROP_INDEX_LOADED))

    async def mark_index_loaded(self) -> None:
        await self.redis.set(DROP_INDEX_LOADED, "1")

    async def read(self, drop_ids: list[str]) -> dict[str, MirroredDrop]:
        """Definitions and counters of the given drops, in one round trip.

        Drops that are not mirrored are missing from the result.
        """
        if not drop_ids:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for drop_id in drop_ids:
            keys = DropKeys(drop_id)
            pipe.hmget(keys.drop, ["def", "total", "avail", "sold"])
            pipe.hlen(keys.holds)
            pipe.lrange(keys.buyers, 0, 4)
            pipe.hgetall(keys.sizes)  # empty for a drop without sizes
        replies = await pipe.execute()
        result: dict[str, MirroredDrop] = {}
        for i, drop_id in enumerate(drop_ids):
            fields, live, buyers, sizes = replies[4 * i : 4 * i + 4]
            raw_def, total, avail, sold = fields
            if raw_def is None:
                continue
            counters = DropCounters(
                total=int(total),
                available=int(avail),
                sold=int(sold or 0),
                live_holds=int(live),
                recent_buyers=[orjson.loads(b) for b in buyers],
                sizes=_size_stock(sizes),
            )
            result[drop_id] = MirroredDrop(DropDefinition.from_json(raw_def), counters)
        return result

    async def counters(self, drop_id: str) -> tuple[int, int, int, int] | None:
        """(total, available, sold, live holds) of one drop, read atomically, or None
        when not mirrored."""
        found = await self.counts(drop_id)
        return None if found is None else found[0]

    async def counts(
        self, drop_id: str
    ) -> tuple[tuple[int, int, int, int], list[SizeCount]] | None:
        """`counters` and, for a sized drop, each size's, all read in one step."""
        keys = DropKeys(drop_id)
        reply = await self.scripts.run(
            ScriptName.DROP_COUNTERS, [keys.drop, keys.holds, keys.sizes, keys.hold_sizes], []
        )
        if not reply:
            return None
        total, avail, sold, live = (int(value) for value in reply[:4])
        rest = reply[4:]
        sizes = [
            SizeCount(str(rest[i]), *(int(v) for v in rest[i + 1 : i + 5]))
            for i in range(0, len(rest), 5)
        ]
        return (total, avail, sold, live), sizes

    async def counters_of(self, drop_ids: list[str]) -> dict[str, tuple[int, int, int, int] | None]:
        """`counters` of many drops (see `counts_of`)."""
        found = await self.counts_of(drop_ids)
        return {drop_id: None if c is None else c[0] for drop_id, c in found.items()}

    async def counts_of(
        self, drop_ids: list[str]
    ) -> dict[str, tuple[tuple[int, int, int, int], list[SizeCount]] | None]:
        """`counts` of many drops, asked a chunk at a time: the requests of a chunk leave
        together, so thousands of drops cost a few round trips, not thousands."""
        result: dict[str, tuple[tuple[int, int, int, int], list[SizeCount]] | None] = {}
        for chunk in chunks(drop_ids, COUNTERS_CHUNK):
            replies = await asyncio.gather(*(self.counts(drop_id) for drop_id in chunk))
            result.update(zip(chunk, replies, strict=True))
        return result
