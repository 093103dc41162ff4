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
from app.store.keys import DropKeys, HoldRef, new_id
from tests.support.factories import assert_holds_in_step
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
async def db(stores: StoreUrls) -> AsyncIterator[Database]:
    """The sweeper asks PostgreSQL about holds created in the first second of a fresh
    Redis (they might have been reloaded), so it gets one."""
    database = Database(stores.database_url)
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
def sweeper(hold_store: HoldStore, db: Database) -> Sweeper:
    return Sweeper(hold_store, db)


async def hold_released(redis: Redis, ref: HoldRef) -> bool:
    return await hold_entry(redis, ref) is None


async def wait_until_due(redis: Redis, *refs: HoldRef) -> None:
    entries = [await hold_entry(redis, ref) for ref in refs]
    await wait_for_redis_time(redis, max(e.expires_at_ms for e in entries if e) + 1)


async def hold_already_due(redis: Redis, hold_store: HoldStore, drop_id: str) -> HoldRef:
    """A hold of 20 ms, waited out: due before any horizon would allow."""
    ref, _ = await reserve_ok(hold_store, drop_id, ttl_ms=20)
    await wait_until_due(redis, ref)
    return ref


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

    await wait_until_due(redis, *short)
    released = await sweeper.sweep(ids)

    assert released == 3
    for ref in short:
        assert await hold_entry(redis, ref) is None
        assert (await drop_hash(redis, ref.drop_id))["avail"] == "5"
    assert await hold_entry(redis, long) is not None
    assert await due_score(redis, long) is not None
    assert (await drop_hash(redis, drops[5].id))["avail"] == "4"
    for drop in drops:
        await assert_holds_in_step(redis, drop.id)


async def test_a_sweep_with_nothing_due_changes_nothing(
    redis: Redis, hold_store: HoldStore, sweeper: Sweeper, make_drop: MakeDrop
) -> None:
    drop = await make_drop(total=2)
    ref, _ = await reserve_ok(hold_store, drop.id)

    assert await sweeper.sweep([drop.id, new_id()]) == 0
    assert await sweeper.sweep([]) == 0

    assert await hold_entry(redis, ref) is not None
    assert (await drop_hash(redis, drop.id))["avail"] == "1"


async def test_the_leaders_pass_probes_a_drop_at_its_earliest_deadline_or_half_a_horizon_on(
    redis: Redis, hold_store: HoldStore, db: Database, make_drop: MakeDrop
) -> None:
    quiet, busy = await make_drop(total=5, limit=5), await make_drop(total=5, limit=5)
    first, _ = await reserve_ok(hold_store, busy.id, ttl_ms=1500)
    sweeper = Sweeper(hold_store, db, horizon_ms=6000)
    assert await sweeper.sweep_pass([quiet.id, busy.id]) == 0  # both probed, both planned
    first_due = (await hold_entry(redis, first)).expires_at_ms  # type: ignore[union-attr]
    assert sweeper.next_probe_ms[busy.id] == first_due
    quiet_until = sweeper.next_probe_ms[quiet.id]

    # Holds that fall due sooner than the horizon allows, so that only a skipped
    # probe explains a hold left in place.
    in_quiet, _ = await reserve_ok(hold_store, quiet.id, ttl_ms=20)
    in_busy, _ = await reserve_ok(hold_store, busy.id, ttl_ms=20)
    newcomer = await make_drop(total=5)
    in_new, _ = await reserve_ok(hold_store, newcomer.id, ttl_ms=20)
    await wait_until_due(redis, in_quiet, in_busy, in_new)
    assert await redis_now_ms(redis) < first_due, "the first hold fell due too soon"
    every = [quiet.id, busy.id, newcomer.id]

    assert await sweeper.sweep_pass(every) == 1  # only the drop not seen before
    assert await hold_released(redis, in_new)
    assert not await hold_released(redis, in_busy)

    await wait_for_redis_time(redis, first_due)
    assert await sweeper.sweep_pass(every) == 2  # busy's earliest deadline came
    assert await hold_released(redis, first)
    assert await hold_released(redis, in_busy)
    assert not await hold_released(redis, in_quiet)

    await wait_for_redis_time(redis, quiet_until)
    assert await sweeper.sweep_pass(every) == 1  # half a horizon after its empty probe
    assert await hold_released(redis, in_quiet)
    assert (await drop_hash(redis, quiet.id))["avail"] == "5"


async def test_a_drop_that_had_holds_due_is_probed_again_on_the_next_pass(
    redis: Redis, hold_store: HoldStore, db: Database, make_drop: MakeDrop
) -> None:
    drop = await make_drop(total=5, limit=5)
    sweeper = Sweeper(hold_store, db, horizon_ms=3_600_000)
    later, _ = await reserve_ok(hold_store, drop.id, ttl_ms=1000)
    await hold_already_due(redis, hold_store, drop.id)
    assert await sweeper.sweep_pass([drop.id]) == 1

    # What is left after a sweep is not read back, so the next pass looks again.
    await wait_until_due(redis, later)
    assert await sweeper.sweep_pass([drop.id]) == 1
    assert await hold_released(redis, later)


async def test_the_leaders_pass_probes_every_drop_after_redis_restarted(
    redis: Redis, hold_store: HoldStore, db: Database, make_drop: MakeDrop
) -> None:
    drop = await make_drop(total=5)
    sweeper = Sweeper(hold_store, db, horizon_ms=3_600_000)
    await sweeper.sweep_pass([drop.id])
    ref = await hold_already_due(redis, hold_store, drop.id)  # as if reloaded from disk
    assert await sweeper.sweep_pass([drop.id]) == 0

    # A Redis that started at another time may have reloaded entries into any drop.
    sweeper.redis_run_id = "an earlier run"

    assert await sweeper.sweep_pass([drop.id]) == 1
    assert await hold_released(redis, ref)


async def test_without_a_horizon_every_pass_probes_every_drop(
    redis: Redis, hold_store: HoldStore, sweeper: Sweeper, make_drop: MakeDrop
) -> None:
    drop = await make_drop(total=5)
    assert await sweeper.sweep_pass([drop.id]) == 0
    await hold_already_due(redis, hold_store, drop.id)

    assert await sweeper.sweep_pass([drop.id]) == 1


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
        await redis.zadd(DropKeys(ref.drop_id).closed_at, {ref.hold_id: past_retention})

    pruned = await sweeper.prune([first.id, second.id, third.id])

    assert pruned == 6
    for ref in old:
        keys = DropKeys(ref.drop_id)
        assert await redis.hexists(keys.closed, ref.hold_id) is False  # type: ignore[misc]
        assert await redis.zscore(keys.closed_at, ref.hold_id) is None
    (kept,) = recent
    assert await redis.hexists(DropKeys(kept.drop_id).closed, kept.hold_id) is True  # type: ignore[misc]


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
