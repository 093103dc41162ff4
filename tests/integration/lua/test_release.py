"""release.lua: a live ACTIVE hold ends once, returns its unit once, and nothing else moves."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime

from redis.asyncio import Redis

from app.store.holds import ClaimOutcome, HoldStore, ReleaseOutcome, ReleaseReason
from app.store.keys import DropKeys, HoldRef, new_id
from app.store.scripts import ScriptName, Scripts
from tests.support.factories import assert_holds_in_step
from tests.support.lua_fixtures import (
    MakeDrop,
    StockChannel,
    closed_entry,
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
)


async def _assert_ended(
    redis: Redis, ref: HoldRef, state: str, expires: int, created: int, closed_ms: int
) -> None:
    """The hold left every live structure and was recorded as `state` at `closed_ms`."""
    keys = DropKeys(ref.drop_id)
    assert await hold_entry(redis, ref) is None
    assert await due_score(redis, ref) is None
    assert await timer_pttl(redis, ref) == -2
    assert ref.hold_id not in await user_holds(redis, ref)
    closed = await closed_entry(redis, ref)
    assert closed is not None
    assert (closed.state, closed.user_id, closed.expires_at_ms, closed.created_at_ms) == (
        state,
        ref.user_id,
        expires,
        created,
    )
    assert int(closed.extra) == closed_ms
    assert await redis.zscore(keys.closed_at, ref.hold_id) == closed_ms


async def test_expired_releases_once_the_deadline_passed(
    redis: Redis, scripts: Scripts, hold_store: HoldStore, make_drop: MakeDrop
) -> None:
    drop = await make_drop(total=3)
    ref, held = await reserve_ok(hold_store, drop.id, ttl_ms=50)
    await stock_take(scripts, drop.id)
    await wait_for_redis_time(redis, held.expires_at_ms)
    async with StockChannel(redis) as channel:
        result = await hold_store.release(ref, ReleaseReason.EXPIRED)
        published = await channel.messages()
    after = await redis_now_ms(redis)

    assert result.outcome is ReleaseOutcome.RELEASED
    assert result.available == 3
    assert 0 <= result.lag_ms <= after - held.expires_at_ms
    assert published == [drop.id]
    assert await drop_hash(redis, drop.id) == mirrored_fields(drop, avail=3)
    assert await users_hash(redis, drop.id) == {}  # the count reached 0: the field is gone
    await _assert_ended(
        redis,
        ref,
        "EXPIRED",
        held.expires_at_ms,
        held.created_at_ms,
        held.expires_at_ms + result.lag_ms,
    )


async def test_expired_before_the_deadline_is_not_due(
    redis: Redis, hold_store: HoldStore, make_drop: MakeDrop
) -> None:
    drop = await make_drop()
    ref, held = await reserve_ok(hold_store, drop.id)
    before = await snapshot(redis, drop.id)
    result = await hold_store.release(ref, ReleaseReason.EXPIRED)
    assert result.outcome is ReleaseOutcome.NOT_DUE
    assert await snapshot(redis, drop.id) == before
    assert await _raw_reply(hold_store, ref, ReleaseReason.EXPIRED) == [
        "NOT_DUE",
        held.expires_at_ms,
    ]


async def test_cancel_by_the_owner_at_any_time(
    redis: Redis, hold_store: HoldStore, make_drop: MakeDrop
) -> None:
    drop = await make_drop(total=5, limit=3)
    user = new_id()
    ref, held = await reserve_ok(hold_store, drop.id, user)
    kept, _ = await reserve_ok(hold_store, drop.id, user)
    result = await hold_store.release(ref, ReleaseReason.CANCELLED, user)
    now = await redis_now_ms(redis)

    assert result.outcome is ReleaseOutcome.RELEASED
    assert result.available == 4
    assert result.lag_ms < 0  # before its deadline: lag = now - expiresAt
    assert (await drop_hash(redis, drop.id))["avail"] == "4"
    assert await users_hash(redis, drop.id) == {user: "1"}  # decremented, not deleted
    assert await user_holds(redis, ref) == {kept.hold_id}
    closed_ms = held.expires_at_ms + result.lag_ms
    assert closed_ms <= now
    await _assert_ended(redis, ref, "CANCELLED", held.expires_at_ms, held.created_at_ms, closed_ms)
    assert await hold_entry(redis, kept) is not None


async def test_another_users_hold_is_not_found(
    redis: Redis, hold_store: HoldStore, make_drop: MakeDrop
) -> None:
    drop = await make_drop()
    ref, _ = await reserve_ok(hold_store, drop.id)
    before = await snapshot(redis, drop.id)
    result = await hold_store.release(ref, ReleaseReason.CANCELLED, new_id())
    assert result.outcome is ReleaseOutcome.NOT_FOUND
    assert await snapshot(redis, drop.id) == before


async def test_unknown_hold_is_not_found(
    redis: Redis, hold_store: HoldStore, make_drop: MakeDrop
) -> None:
    drop = await make_drop()
    before = await snapshot(redis, drop.id)
    for owner in ("", new_id()):
        result = await hold_store.release(new_ref(drop.id), ReleaseReason.CANCELLED, owner)
        assert result.outcome is ReleaseOutcome.NOT_FOUND
    assert await snapshot(redis, drop.id) == before


async def test_second_release_is_already_with_the_closed_state(
    redis: Redis, hold_store: HoldStore, make_drop: MakeDrop
) -> None:
    drop = await make_drop(total=2)
    ref, _ = await reserve_ok(hold_store, drop.id)
    first = await hold_store.release(ref, ReleaseReason.CANCELLED, ref.user_id)
    assert first.outcome is ReleaseOutcome.RELEASED
    before = await snapshot(redis, drop.id)
    async with StockChannel(redis) as channel:
        again = await hold_store.release(ref, ReleaseReason.CANCELLED, ref.user_id)
        by_system = await hold_store.release(ref, ReleaseReason.VOIDED)
        by_stranger = await hold_store.release(ref, ReleaseReason.CANCELLED, new_id())
        published = await channel.messages()
    assert (again.outcome, again.closed_state) == (ReleaseOutcome.ALREADY, "CANCELLED")
    assert (by_system.outcome, by_system.closed_state) == (ReleaseOutcome.ALREADY, "CANCELLED")
    assert by_stranger.outcome is ReleaseOutcome.NOT_FOUND
    assert published == []
    assert await snapshot(redis, drop.id) == before
    assert (await drop_hash(redis, drop.id))["avail"] == "2"  # the unit came back once


async def test_overlapping_releases_return_the_unit_once(
    redis: Redis, hold_store: HoldStore, make_drop: MakeDrop
) -> None:
    """Keyspace event, sweeper, reconciler and a cancel may all race on one hold."""
    drop = await make_drop(total=2)
    ref, _ = await reserve_ok(hold_store, drop.id)
    calls = [
        hold_store.release(ref, ReleaseReason.VOIDED)
        if i % 2
        else hold_store.release(ref, ReleaseReason.CANCELLED, ref.user_id)
        for i in range(40)
    ]
    results = await asyncio.gather(*calls)
    outcomes = Counter(result.outcome for result in results)
    assert outcomes == {ReleaseOutcome.RELEASED: 1, ReleaseOutcome.ALREADY: 39}
    assert (await drop_hash(redis, drop.id))["avail"] == "2"
    assert await users_hash(redis, drop.id) == {}
    await assert_holds_in_step(redis, drop.id)


async def test_release_after_a_purchase_is_already_purchased(
    redis: Redis, hold_store: HoldStore, make_drop: MakeDrop
) -> None:
    drop = await make_drop()
    ref, _ = await reserve_ok(hold_store, drop.id)
    assert await hold_store.commit(ref, "a", datetime(2030, 1, 1, tzinfo=UTC)) == ("COMMITTED", "")
    result = await hold_store.release(ref, ReleaseReason.CANCELLED, ref.user_id)
    assert (result.outcome, result.closed_state) == (ReleaseOutcome.ALREADY, "PURCHASED")
    assert (await drop_hash(redis, drop.id))["avail"] == str(drop.total_stock - 1)


async def test_purchasing_hold_is_left_alone(
    redis: Redis, hold_store: HoldStore, make_drop: MakeDrop
) -> None:
    drop = await make_drop()
    ref, _ = await reserve_ok(hold_store, drop.id)
    claimed = await hold_store.claim(ref, "claim-1", 30_000)
    assert claimed.outcome is ClaimOutcome.CLAIMED
    before = await snapshot(redis, drop.id)
    for reason, owner in (
        (ReleaseReason.CANCELLED, ref.user_id),
        (ReleaseReason.EXPIRED, ""),
        (ReleaseReason.VOIDED, ""),
    ):
        result = await hold_store.release(ref, reason, owner)
        assert result.outcome is ReleaseOutcome.PURCHASING
    assert await snapshot(redis, drop.id) == before


async def test_voided_ends_an_active_hold_now_and_records_expired(
    redis: Redis, hold_store: HoldStore, make_drop: MakeDrop
) -> None:
    drop = await make_drop(total=2)
    ref, held = await reserve_ok(hold_store, drop.id)  # a minute before its deadline
    result = await hold_store.release(ref, ReleaseReason.VOIDED)
    assert result.outcome is ReleaseOutcome.RELEASED
    assert result.available == 2
    assert await users_hash(redis, drop.id) == {}
    await _assert_ended(
        redis,
        ref,
        "EXPIRED",
        held.expires_at_ms,
        held.created_at_ms,
        held.expires_at_ms + result.lag_ms,
    )


async def test_release_with_the_dirty_flag_set_does_not_publish(
    redis: Redis, hold_store: HoldStore, make_drop: MakeDrop
) -> None:
    drop = await make_drop()  # the rebuild left dirty set
    ref, _ = await reserve_ok(hold_store, drop.id)
    async with StockChannel(redis) as channel:
        result = await hold_store.release(ref, ReleaseReason.CANCELLED, ref.user_id)
        assert await channel.messages() == []
    assert result.outcome is ReleaseOutcome.RELEASED
    assert (await drop_hash(redis, drop.id))["dirty"] == "1"


async def _raw_reply(hold_store: HoldStore, ref: HoldRef, reason: ReleaseReason) -> list[object]:
    """The raw reply of release.lua, for the fields the typed result drops."""
    keys, args = hold_store.release_args(ref, reason)
    return await hold_store.scripts.run(ScriptName.RELEASE, keys, args)
