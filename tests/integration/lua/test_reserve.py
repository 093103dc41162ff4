"""reserve.lua: every reply, the exact state it leaves, and that a refusal writes nothing."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime

from redis.asyncio import Redis

from app.store.drops import DropStore, RebuildMode, RebuildOutcome
from app.store.holds import HoldStore, ReleaseReason, ReserveOutcome
from app.store.keys import DropKeys, new_id, revoked_session
from app.store.scripts import Scripts
from tests.support.factories import assert_holds_in_step
from tests.support.lua_fixtures import (
    TTL_MS,
    MakeDrop,
    StockChannel,
    definition,
    drop_hash,
    due_score,
    hold_entry,
    mirrored_fields,
    new_ref,
    redis_now_ms,
    reserve_ok,
    snapshot,
    stock_take,
    timer_pttl,
    user_holds,
    users_hash,
    wait_for_redis_time,
    whole_second,
)


async def test_ok_takes_one_unit_and_writes_the_hold(
    redis: Redis, scripts: Scripts, hold_store: HoldStore, make_drop: MakeDrop
) -> None:
    drop = await make_drop(total=3, limit=2)
    await stock_take(scripts, drop.id)  # the broadcaster pushed: dirty is clear
    ref = new_ref(drop.id)
    before = await redis_now_ms(redis)
    async with StockChannel(redis) as channel:
        result = await hold_store.reserve(ref, TTL_MS)
        published = await channel.messages()
    after = await redis_now_ms(redis)

    assert result.outcome is ReserveOutcome.OK
    assert result.available == 2
    assert before <= result.created_at_ms <= after
    assert result.expires_at_ms - result.created_at_ms == TTL_MS
    assert await drop_hash(redis, drop.id) == mirrored_fields(drop, avail=2)
    assert await users_hash(redis, drop.id) == {ref.user_id: "1"}
    entry = await hold_entry(redis, ref)
    assert entry is not None
    assert (entry.state, entry.user_id, entry.extra) == ("ACTIVE", ref.user_id, "")
    assert (entry.expires_at_ms, entry.created_at_ms) == (
        result.expires_at_ms,
        result.created_at_ms,
    )
    assert await due_score(redis, ref) == result.expires_at_ms
    assert TTL_MS - 5_000 <= await timer_pttl(redis, ref) <= TTL_MS
    assert await user_holds(redis, ref) == {ref.hold_id}
    assert published == [drop.id]


async def test_ok_publishes_only_when_the_dirty_flag_was_clear(
    redis: Redis, scripts: Scripts, hold_store: HoldStore, make_drop: MakeDrop
) -> None:
    drop = await make_drop(total=5, limit=5)
    user = new_id()
    async with StockChannel(redis) as channel:
        await reserve_ok(hold_store, drop.id, user)  # dirty still set by the rebuild
        assert await channel.messages() == []
        assert await stock_take(scripts, drop.id) == 4
        await reserve_ok(hold_store, drop.id, user)
        await reserve_ok(hold_store, drop.id, user)
        assert await channel.messages() == [drop.id]
    assert (await drop_hash(redis, drop.id))["dirty"] == "1"
    assert await users_hash(redis, drop.id) == {user: "3"}


async def test_drop_not_found_when_not_mirrored(redis: Redis, hold_store: HoldStore) -> None:
    ref = new_ref(new_id())
    result = await hold_store.reserve(ref, TTL_MS)
    assert result.outcome is ReserveOutcome.DROP_NOT_FOUND
    assert await snapshot(redis, ref.drop_id) == {}


async def test_a_signed_out_session_is_refused_before_anything_else(
    redis: Redis, hold_store: HoldStore, make_drop: MakeDrop
) -> None:
    drop = await make_drop(total=3)
    marker = revoked_session("5e5510a")
    await redis.set(marker, "1")
    ref = new_ref(drop.id)
    before = await snapshot(redis, drop.id)
    result = await hold_store.reserve(ref, TTL_MS, "5e5510a")
    assert result.outcome is ReserveOutcome.REVOKED
    assert await snapshot(redis, drop.id) == before
    other = await hold_store.reserve(new_ref(drop.id), TTL_MS, "a11ve")
    assert other.outcome is ReserveOutcome.OK  # only the signed-out session is refused
    unknown = await hold_store.reserve(new_ref(new_id()), TTL_MS, "5e5510a")
    assert unknown.outcome is ReserveOutcome.REVOKED  # even for a drop Redis lacks


async def test_drop_not_live_when_cancelled(
    redis: Redis, hold_store: HoldStore, make_drop: MakeDrop
) -> None:
    drop = await make_drop(cancelled=True)
    await _assert_refused(redis, hold_store, drop.id, ReserveOutcome.DROP_NOT_LIVE)


async def test_drop_not_live_before_it_starts(
    redis: Redis, hold_store: HoldStore, make_drop: MakeDrop
) -> None:
    drop = await make_drop(starts_in_s=60)
    await _assert_refused(redis, hold_store, drop.id, ReserveOutcome.DROP_NOT_LIVE)


async def test_drop_not_live_until_the_next_second_starts_it(
    redis: Redis, hold_store: HoldStore, make_drop: MakeDrop
) -> None:
    now = await redis_now_ms(redis)
    if now % 1000 > 500:  # near a second's end: the start would come before the reserve
        await wait_for_redis_time(redis, (now // 1000 + 1) * 1000)
    drop = await make_drop(starts_in_s=1)  # half a second or more ahead of Redis now
    await _assert_refused(redis, hold_store, drop.id, ReserveOutcome.DROP_NOT_LIVE)


async def test_drop_not_live_after_it_ended(
    redis: Redis, hold_store: HoldStore, make_drop: MakeDrop
) -> None:
    drop = await make_drop(starts_in_s=-120, ends_in_s=-60)
    await _assert_refused(redis, hold_store, drop.id, ReserveOutcome.DROP_NOT_LIVE)


async def test_not_live_from_the_end_itself(
    redis: Redis, hold_store: HoldStore, make_drop: MakeDrop
) -> None:
    """endsAt is exclusive: an end at the current second (<= Redis now) is already over."""
    drop = await make_drop(starts_in_s=-60, ends_in_s=0)
    await _assert_refused(redis, hold_store, drop.id, ReserveOutcome.DROP_NOT_LIVE)


async def test_live_from_the_start_itself(
    redis: Redis, hold_store: HoldStore, make_drop: MakeDrop
) -> None:
    """startsAt is inclusive: a start at the current second (<= Redis now) is live."""
    drop = await make_drop(starts_in_s=0)
    await reserve_ok(hold_store, drop.id)


async def test_live_until_a_future_end(
    redis: Redis, hold_store: HoldStore, make_drop: MakeDrop
) -> None:
    drop = await make_drop(starts_in_s=-120, ends_in_s=60)
    _, result = await reserve_ok(hold_store, drop.id)
    assert result.available == drop.total_stock - 1


async def test_sold_out_when_nothing_is_available(
    redis: Redis, hold_store: HoldStore, make_drop: MakeDrop
) -> None:
    drop = await make_drop(total=1)
    await reserve_ok(hold_store, drop.id)
    await _assert_refused(redis, hold_store, drop.id, ReserveOutcome.SOLD_OUT)
    assert (await drop_hash(redis, drop.id))["avail"] == "0"


async def test_sold_out_when_everything_was_sold(
    redis: Redis, hold_store: HoldStore, make_drop: MakeDrop
) -> None:
    drop = await make_drop(total=2, sold=2, purchases_by_user={new_id(): 1, new_id(): 1})
    await _assert_refused(redis, hold_store, drop.id, ReserveOutcome.SOLD_OUT)


async def test_limit_counts_live_holds(
    redis: Redis, hold_store: HoldStore, make_drop: MakeDrop
) -> None:
    drop = await make_drop(total=10, limit=2)
    user = new_id()
    await reserve_ok(hold_store, drop.id, user)
    await reserve_ok(hold_store, drop.id, user)
    await _assert_refused(redis, hold_store, drop.id, ReserveOutcome.LIMIT_REACHED, user)
    await reserve_ok(hold_store, drop.id)  # another user is not limited by it


async def test_limit_counts_purchases_and_live_holds(
    redis: Redis, hold_store: HoldStore, make_drop: MakeDrop
) -> None:
    user = new_id()
    drop = await make_drop(total=10, limit=2, sold=1, purchases_by_user={user: 1})
    await reserve_ok(hold_store, drop.id, user)
    await _assert_refused(redis, hold_store, drop.id, ReserveOutcome.LIMIT_REACHED, user)


async def test_limit_counts_a_committed_hold_but_not_a_released_one(
    redis: Redis, hold_store: HoldStore, make_drop: MakeDrop
) -> None:
    drop = await make_drop(total=10, limit=1)
    user = new_id()
    held, _ = await reserve_ok(hold_store, drop.id, user)
    await hold_store.release(held, ReleaseReason.CANCELLED, user)
    bought, _ = await reserve_ok(hold_store, drop.id, user)
    assert await hold_store.commit(bought, "a", datetime(2030, 1, 1, tzinfo=UTC)) == (
        "COMMITTED",
        "",
    )
    await _assert_refused(redis, hold_store, drop.id, ReserveOutcome.LIMIT_REACHED, user)


async def test_refusals_are_checked_in_order(
    redis: Redis, drop_store: DropStore, hold_store: HoldStore
) -> None:
    """Not live beats the limit, and the limit beats sold out."""
    user = new_id()
    starts = await whole_second(redis, 60)
    future = definition(starts, total=1, limit=1)
    assert (await drop_store.rebuild(RebuildMode.INIT, future, 1, {user: 1}))[0] is (
        RebuildOutcome.BUILT
    )
    await _assert_refused(redis, hold_store, future.id, ReserveOutcome.DROP_NOT_LIVE, user)
    live = definition(await whole_second(redis, -60), total=1, limit=1)
    await drop_store.rebuild(RebuildMode.INIT, live, 1, {user: 1})
    await _assert_refused(redis, hold_store, live.id, ReserveOutcome.LIMIT_REACHED, user)
    await _assert_refused(redis, hold_store, live.id, ReserveOutcome.SOLD_OUT)


async def test_concurrent_reserves_never_oversell(
    redis: Redis, hold_store: HoldStore, make_drop: MakeDrop
) -> None:
    drop = await make_drop(total=25, limit=1)
    refs = [new_ref(drop.id) for _ in range(200)]
    results = await asyncio.gather(*(hold_store.reserve(ref, TTL_MS) for ref in refs))
    outcomes = Counter(result.outcome for result in results)
    assert outcomes == {ReserveOutcome.OK: 25, ReserveOutcome.SOLD_OUT: 175}
    assert sorted(r.available for r in results if r.outcome is ReserveOutcome.OK) == list(range(25))
    assert (await drop_hash(redis, drop.id))["avail"] == "0"
    assert await redis.hlen(DropKeys(drop.id).holds) == 25
    assert await redis.zcard(DropKeys(drop.id).due) == 25
    assert len(await users_hash(redis, drop.id)) == 25
    await assert_holds_in_step(redis, drop.id)


async def _assert_refused(
    redis: Redis,
    hold_store: HoldStore,
    drop_id: str,
    expected: ReserveOutcome,
    user_id: str | None = None,
) -> None:
    """The refusal is `expected`, and neither a key nor a message was written."""
    before = await snapshot(redis, drop_id)
    ref = new_ref(drop_id, user_id)
    async with StockChannel(redis) as channel:
        result = await hold_store.reserve(ref, TTL_MS)
        published = await channel.messages()
    assert result.outcome is expected
    assert (result.expires_at_ms, result.created_at_ms, result.available) == (0, 0, 0)
    assert await snapshot(redis, drop_id) == before
    assert not await redis.exists(DropKeys(drop_id).timer(ref.hold_id))
    assert published == []
