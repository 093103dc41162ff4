"""drop_sync.lua, drop_rebuild.lua, restock.lua, stock_take.lua: replies and exact state."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from redis.asyncio import Redis

from app.domain import from_ms, to_ms
from app.store.drops import DropStore, RebuildMode, RebuildOutcome
from app.store.holds import ClaimOutcome, HoldStore
from app.store.keys import DROP_INDEX, DropKeys, new_id
from app.store.scripts import Scripts
from tests.support.lua_fixtures import (
    MakeDrop,
    StockChannel,
    definition,
    drop_hash,
    mirrored_fields,
    reserve_ok,
    snapshot,
    stock_take,
    users_hash,
    whole_second,
)


async def test_sync_updates_the_definition_and_keeps_the_counters(
    redis: Redis,
    scripts: Scripts,
    drop_store: DropStore,
    hold_store: HoldStore,
    make_drop: MakeDrop,
) -> None:
    buyer = new_id()
    drop = await make_drop(total=10, limit=2, sold=1, purchases_by_user={buyer: 1})
    ref, _ = await reserve_ok(hold_store, drop.id)
    await stock_take(scripts, drop.id)
    starts = await whole_second(redis, 3600)
    changed = dataclasses.replace(
        drop,
        name="Renamed",
        total_stock=99,  # sync never touches stock: restock or rebuild does
        per_user_limit=4,
        starts_at=from_ms(starts),
        ends_at=from_ms(starts + 60_000),
        cancelled=True,
    )
    async with StockChannel(redis) as channel:
        assert await drop_store.sync(changed) is True
        assert await drop_store.sync(changed) is True  # dirty already set: no second push
        published = await channel.messages()
    assert published == [drop.id]
    assert await drop_hash(redis, drop.id) == mirrored_fields(changed, avail=8, sold=1, total=10)
    assert await users_hash(redis, drop.id) == {ref.user_id: "1", buyer: "1"}
    assert await redis.zscore(DROP_INDEX, drop.id) == starts


async def test_sync_of_a_drop_not_mirrored_is_missing(redis: Redis, drop_store: DropStore) -> None:
    drop = definition(await whole_second(redis, -60))
    async with StockChannel(redis) as channel:
        assert await drop_store.sync(drop) is False
        assert await channel.messages() == []
    assert await snapshot(redis, drop.id) == {}
    assert await redis.zscore(DROP_INDEX, drop.id) is None


async def test_init_builds_counters_from_sales(redis: Redis, drop_store: DropStore) -> None:
    drop = definition(await whole_second(redis, -60), total=10, limit=3)
    alice, bob = new_id(), new_id()
    async with StockChannel(redis) as channel:
        outcome = await drop_store.rebuild(RebuildMode.INIT, drop, 3, {alice: 2, bob: 1})
        published = await channel.messages()
    assert outcome == (RebuildOutcome.BUILT, 7)
    assert published == [drop.id]
    assert await drop_hash(redis, drop.id) == mirrored_fields(drop, avail=7, sold=3)
    assert await users_hash(redis, drop.id) == {alice: "2", bob: "1"}
    assert await redis.zscore(DROP_INDEX, drop.id) == to_ms(drop.starts_at)


async def test_init_counts_the_live_holds_that_survived(
    redis: Redis, drop_store: DropStore, hold_store: HoldStore, make_drop: MakeDrop
) -> None:
    drop = await make_drop(total=10, limit=3)
    alice, bob = new_id(), new_id()
    claimed, _ = await reserve_ok(hold_store, drop.id, alice)
    await reserve_ok(hold_store, drop.id, bob)
    assert (await hold_store.claim(claimed, "c", 30_000)).outcome is ClaimOutcome.CLAIMED
    keys = DropKeys(drop.id)
    await redis.delete(keys.drop, keys.users)  # Redis lost the counters, not the holds
    outcome = await drop_store.rebuild(RebuildMode.INIT, drop, 1, {alice: 1}, epoch=41)
    assert outcome == (RebuildOutcome.BUILT, 7)  # 10 - 1 sold - 2 live
    assert await drop_hash(redis, drop.id) == mirrored_fields(
        drop, avail=7, sold=1, purchasing=1, epoch=41
    )
    assert await users_hash(redis, drop.id) == {alice: "2", bob: "1"}
    # The surviving claim goes on under the new epoch, which PostgreSQL checks.
    again = await hold_store.claim(claimed, "d", 30_000)
    assert (again.outcome, again.claim_id, again.epoch) == (ClaimOutcome.IN_PROGRESS, "c", 41)


async def test_init_of_a_mirrored_drop_is_exists(
    redis: Redis, drop_store: DropStore, hold_store: HoldStore, make_drop: MakeDrop
) -> None:
    drop = await make_drop(total=5)
    await reserve_ok(hold_store, drop.id)
    before = await snapshot(redis, drop.id)
    async with StockChannel(redis) as channel:
        outcome = await drop_store.rebuild(RebuildMode.INIT, drop, 4, {new_id(): 4})
        assert await channel.messages() == []
    assert outcome == (RebuildOutcome.EXISTS, -1)
    assert await snapshot(redis, drop.id) == before


async def test_repair_overwrites_drifted_counters(
    redis: Redis, drop_store: DropStore, hold_store: HoldStore, make_drop: MakeDrop
) -> None:
    drop = await make_drop(total=10, limit=3)
    ref, _ = await reserve_ok(hold_store, drop.id)
    keys = DropKeys(drop.id)
    await redis.hset(keys.drop, mapping={"avail": "42", "total": "3"})
    await redis.hset(keys.users, mapping={ref.user_id: "9", "ghost": "1"})
    buyer = new_id()
    async with StockChannel(redis) as channel:
        outcome = await drop_store.rebuild(
            RebuildMode.REPAIR, drop, 2, {buyer: 2}, expected_sold=0, epoch=42
        )
        published = await channel.messages()
    assert outcome == (RebuildOutcome.BUILT, 7)  # 10 - 2 sold - 1 live
    assert published == [drop.id]  # always pushed, even with dirty already set
    assert await drop_hash(redis, drop.id) == mirrored_fields(drop, avail=7, sold=2, epoch=42)
    claim = await hold_store.claim(ref, "c", 30_000)
    assert (claim.outcome, claim.epoch) == (ClaimOutcome.CLAIMED, 42)
    assert await users_hash(redis, drop.id) == {ref.user_id: "1", buyer: "2"}


async def test_repair_of_a_drop_not_mirrored_builds_it(redis: Redis, drop_store: DropStore) -> None:
    drop = definition(await whole_second(redis, -60), total=4)
    outcome = await drop_store.rebuild(RebuildMode.REPAIR, drop, 1, {"u": 1}, expected_sold=0)
    assert outcome == (RebuildOutcome.BUILT, 3)
    assert await drop_hash(redis, drop.id) == mirrored_fields(drop, avail=3, sold=1)


async def test_repair_is_busy_while_a_purchase_is_in_flight(
    redis: Redis, drop_store: DropStore, hold_store: HoldStore, make_drop: MakeDrop
) -> None:
    drop = await make_drop(total=10)
    ref, _ = await reserve_ok(hold_store, drop.id)
    assert (await hold_store.claim(ref, "c", 30_000)).outcome is ClaimOutcome.CLAIMED
    await redis.hset(DropKeys(drop.id).drop, "avail", "42")
    before = await snapshot(redis, drop.id)
    async with StockChannel(redis) as channel:
        outcome = await drop_store.rebuild(RebuildMode.REPAIR, drop, 0, {}, expected_sold=0)
        assert await channel.messages() == []
    assert outcome == (RebuildOutcome.BUSY, -1)
    assert await snapshot(redis, drop.id) == before


async def test_repair_is_busy_when_a_sale_was_counted_since_the_read(
    redis: Redis, drop_store: DropStore, hold_store: HoldStore, make_drop: MakeDrop
) -> None:
    drop = await make_drop(total=10)
    ref, _ = await reserve_ok(hold_store, drop.id)
    assert await hold_store.commit(ref, "a", datetime(2030, 1, 1, tzinfo=UTC)) == (
        "COMMITTED",
        "",
    )  # sold is now 1
    await redis.hset(DropKeys(drop.id).drop, "avail", "42")
    before = await snapshot(redis, drop.id)
    outcome = await drop_store.rebuild(RebuildMode.REPAIR, drop, 1, {ref.user_id: 1}, 0)
    assert outcome == (RebuildOutcome.BUSY, -1)
    assert await snapshot(redis, drop.id) == before
    repaired = await drop_store.rebuild(RebuildMode.REPAIR, drop, 1, {ref.user_id: 1}, 1)
    assert repaired == (RebuildOutcome.BUILT, 9)
    assert (await drop_hash(redis, drop.id))["avail"] == "9"


async def test_oversold_clamps_available_at_zero(
    redis: Redis, drop_store: DropStore, hold_store: HoldStore, make_drop: MakeDrop
) -> None:
    drop = await make_drop(total=3, limit=3)
    user = new_id()
    await reserve_ok(hold_store, drop.id, user)
    await reserve_ok(hold_store, drop.id, user)
    outcome = await drop_store.rebuild(RebuildMode.REPAIR, drop, 2, {"buyer": 2}, 0)
    assert outcome == (RebuildOutcome.OVERSOLD, 0)  # 3 - 2 sold - 2 live = -1
    assert await drop_hash(redis, drop.id) == mirrored_fields(drop, avail=0, sold=2)
    assert await users_hash(redis, drop.id) == {user: "2", "buyer": "2"}
    assert await redis.zscore(DROP_INDEX, drop.id) == to_ms(drop.starts_at)


async def test_restock_adds_units_and_marks_dirty(
    redis: Redis,
    scripts: Scripts,
    drop_store: DropStore,
    hold_store: HoldStore,
    make_drop: MakeDrop,
) -> None:
    drop = await make_drop(total=2)
    await reserve_ok(hold_store, drop.id)
    assert await stock_take(scripts, drop.id) == 1
    async with StockChannel(redis) as channel:
        assert await drop_store.restock(drop.id, 5) == 6
        assert await drop_store.restock(drop.id, 1) == 7  # still dirty: no second push
        published = await channel.messages()
    assert published == [drop.id]
    assert await drop_hash(redis, drop.id) == mirrored_fields(drop, avail=7, total=8)


async def test_restock_of_a_drop_not_mirrored_is_missing(
    redis: Redis, drop_store: DropStore
) -> None:
    drop_id = new_id()
    async with StockChannel(redis) as channel:
        assert await drop_store.restock(drop_id, 5) is None
        assert await channel.messages() == []
    assert await snapshot(redis, drop_id) == {}


async def test_stock_take_reads_available_and_clears_dirty(
    redis: Redis, scripts: Scripts, hold_store: HoldStore, make_drop: MakeDrop
) -> None:
    drop = await make_drop(total=4)
    await reserve_ok(hold_store, drop.id)
    assert (await drop_hash(redis, drop.id))["dirty"] == "1"
    assert await stock_take(scripts, drop.id) == 3
    assert await drop_hash(redis, drop.id) == mirrored_fields(drop, avail=3, dirty=False)
    assert await stock_take(scripts, drop.id) == 3  # a second take reads the same value


async def test_stock_take_of_a_drop_not_mirrored_is_minus_one(
    redis: Redis, scripts: Scripts
) -> None:
    drop_id = new_id()
    assert await stock_take(scripts, drop_id) == -1
    assert await snapshot(redis, drop_id) == {}
