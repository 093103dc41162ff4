"""The sweeper's and reconciler's passes over many drops, on a real Redis.

A pass asks about drops a chunk at a time; these tests shrink the chunks so that a
handful of drops spans several of them, and check that nothing due is missed in any
chunk, that nothing not yet due is touched, and that batched reads match single ones.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from app.background import sweeper as sweeper_module
from app.background.sweeper import CLOSED_RETENTION_MS, Sweeper
from app.db.session import Database
from app.store import drops as drops_module
from app.store.drops import DropStore
from app.store.holds import HoldStore, ReleaseOutcome, ReleaseReason
from app.store.keys import DropKeys, new_id
from tests.support.lua_fixtures import (
    MakeDrop,
    drop_hash,
    due_score,
    hold_entry,
    redis_now_ms,
    reserve_ok,
    wait_for_redis_time,
)
from tests.support.stores import StoreUrls


@pytest.fixture
async def sweeper(stores: StoreUrls, hold_store: HoldStore) -> AsyncIterator[Sweeper]:
    """A sweeper on the test stores. It asks PostgreSQL about holds created in the
    first second of a fresh Redis (they might have been reloaded), so it gets one."""
    db = Database(stores.database_url)
    try:
        yield Sweeper(hold_store, db)
    finally:
        await db.dispose()


async def test_a_sweep_releases_due_holds_in_every_chunk_and_nothing_else(
    redis: Redis,
    hold_store: HoldStore,
    sweeper: Sweeper,
    make_drop: MakeDrop,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sweeper_module, "SCAN_CHUNK", 3)
    drops = [await make_drop(total=5) for _ in range(8)]  # chunks of 3, 3 and 2
    short = [(await reserve_ok(hold_store, drops[i].id, ttl_ms=50))[0] for i in (0, 4, 7)]
    long, _ = await reserve_ok(hold_store, drops[5].id)  # not due for a minute
    ids = [d.id for d in drops]
    ids.insert(2, new_id())  # a drop Redis does not have is skipped, not an error

    deadlines = [(await hold_entry(redis, ref)) for ref in short]
    await wait_for_redis_time(redis, max(e.expires_at_ms for e in deadlines if e) + 1)
    released = await sweeper.sweep(ids)

    assert released == 3
    for ref in short:
        assert await hold_entry(redis, ref) is None
        assert (await drop_hash(redis, ref.drop_id))["avail"] == "5"
    assert await hold_entry(redis, long) is not None
    assert await due_score(redis, long) is not None
    assert (await drop_hash(redis, drops[5].id))["avail"] == "4"


async def test_a_sweep_with_nothing_due_changes_nothing(
    redis: Redis, hold_store: HoldStore, sweeper: Sweeper, make_drop: MakeDrop
) -> None:
    drop = await make_drop(total=2)
    ref, _ = await reserve_ok(hold_store, drop.id)

    assert await sweeper.sweep([drop.id, new_id()]) == 0
    assert await sweeper.sweep([]) == 0

    assert await hold_entry(redis, ref) is not None
    assert (await drop_hash(redis, drop.id))["avail"] == "1"


async def test_prune_forgets_only_ended_holds_past_their_retention(
    redis: Redis,
    hold_store: HoldStore,
    sweeper: Sweeper,
    make_drop: MakeDrop,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sweeper_module, "SCAN_CHUNK", 2)
    monkeypatch.setattr(sweeper_module, "PRUNE_BATCH", 2)  # five old ones take three rounds
    first, second, third = [await make_drop(total=10, limit=10) for _ in range(3)]
    ended = []
    for drop_id in [first.id] * 5 + [third.id] * 2:
        ref, _ = await reserve_ok(hold_store, drop_id)
        result = await hold_store.release(ref, ReleaseReason.CANCELLED)
        assert result.outcome is ReleaseOutcome.RELEASED
        ended.append(ref)
    old, recent = ended[:5] + ended[5:6], ended[6:]
    past_retention = await redis_now_ms(redis) - CLOSED_RETENTION_MS - 1
    for ref in old:
        await redis.zadd(DropKeys(ref.drop_id).closed_at, {ref.reservation_id: past_retention})

    pruned = await sweeper.prune([first.id, second.id, third.id])

    assert pruned == 6
    for ref in old:
        keys = DropKeys(ref.drop_id)
        assert await redis.hexists(keys.closed, ref.reservation_id) is False  # type: ignore[misc]
        assert await redis.zscore(keys.closed_at, ref.reservation_id) is None
    (kept,) = recent
    assert await redis.hexists(DropKeys(kept.drop_id).closed, kept.reservation_id) is True  # type: ignore[misc]


async def test_counters_of_many_drops_match_each_drop(
    drop_store: DropStore,
    hold_store: HoldStore,
    make_drop: MakeDrop,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(drops_module, "COUNTERS_CHUNK", 2)
    drops = [await make_drop(total=10, limit=10, sold=i) for i in range(5)]
    for i, drop in enumerate(drops):
        for _ in range(i):
            await reserve_ok(hold_store, drop.id)
    missing = new_id()

    counters = await drop_store.counters_of([d.id for d in drops] + [missing])

    assert counters[missing] is None
    for i, drop in enumerate(drops):
        assert counters[drop.id] == (10, 10 - 2 * i, i, i)
        assert await drop_store.counters(drop.id) == counters[drop.id]
