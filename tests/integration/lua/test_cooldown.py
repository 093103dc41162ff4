"""The reserve cooldown (OWASP OAT-021, denial of inventory), across release.lua and reserve.lua.

release.lua arms the holder's cooldown in the same step that returns the unit, when the
holder cancelled or the hold expired; reserve.lua refuses that user's next reserve in the
drop with COOLDOWN until it passes, so the unit goes to someone else first.
"""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from app.store.holds import HoldStore, ReleaseOutcome, ReleaseReason, ReserveOutcome
from app.store.keys import DropKeys, HoldRef, new_id
from app.store.scripts import Scripts
from tests.support.lua_fixtures import (
    TTL_MS,
    MakeDrop,
    closed_entry,
    drop_hash,
    new_ref,
    reserve_ok,
    snapshot,
    users_hash,
    wait_for_redis_time,
)

COOLDOWN_MS = 10_000


@pytest.fixture
def cooled(redis: Redis, scripts: Scripts) -> HoldStore:
    """A hold store as the app builds it with RESERVE_COOLDOWN_SECONDS=10."""
    return HoldStore(redis, scripts, cooldown_ms=COOLDOWN_MS)


async def _assert_cooling(
    redis: Redis, store: HoldStore, drop_id: str, user_id: str, cooldown_ms: int = COOLDOWN_MS
) -> int:
    """The user's next reserve is COOLDOWN with a wait in (0, cooldown], and writes nothing."""
    before = await snapshot(redis, drop_id)
    ref = new_ref(drop_id, user_id)
    result = await store.reserve(ref, TTL_MS)
    assert result.outcome is ReserveOutcome.COOLDOWN, result
    assert 0 < result.retry_after_ms <= cooldown_ms
    assert (result.expires_at_ms, result.created_at_ms, result.available) == (0, 0, 0)
    assert await snapshot(redis, drop_id) == before
    return result.retry_after_ms


async def _cooldown_pttl(redis: Redis, ref: HoldRef) -> int:
    return int(await redis.pttl(DropKeys(ref.drop_id).cooldown(ref.user_id)))


async def test_owner_cancel_arms_the_cooldown_in_the_same_step(
    redis: Redis, cooled: HoldStore, make_drop: MakeDrop
) -> None:
    drop = await make_drop(total=3, limit=2)
    ref, _ = await reserve_ok(cooled, drop.id)
    result = await cooled.release(ref, ReleaseReason.CANCELLED, ref.user_id)
    assert result.outcome is ReleaseOutcome.RELEASED
    assert 0 < await _cooldown_pttl(redis, ref) <= COOLDOWN_MS
    await _assert_cooling(redis, cooled, drop.id, ref.user_id)
    assert (await drop_hash(redis, drop.id))["avail"] == "3"  # the unit is back for others
    await reserve_ok(cooled, drop.id)  # another user is not held back


@pytest.mark.parametrize("layer", ["listener", "sweeper"])
async def test_expiry_arms_the_cooldown(
    redis: Redis, cooled: HoldStore, make_drop: MakeDrop, layer: str
) -> None:
    """Both expiry entry points: one release (listener, purchase) and release_many (sweeper)."""
    drop = await make_drop(total=2)
    ref, held = await reserve_ok(cooled, drop.id, ttl_ms=50)
    await wait_for_redis_time(redis, held.expires_at_ms)
    if layer == "listener":
        results = [await cooled.release(ref, ReleaseReason.EXPIRED)]
    else:
        results = await cooled.release_many([ref], ReleaseReason.EXPIRED)
    assert [r.outcome for r in results] == [ReleaseOutcome.RELEASED]
    await _assert_cooling(redis, cooled, drop.id, ref.user_id)


async def test_a_system_cancel_arms_no_cooldown(
    redis: Redis, cooled: HoldStore, make_drop: MakeDrop
) -> None:
    """Cancelling a drop releases its holds with no owner: nobody did anything wrong."""
    drop = await make_drop(total=3)
    refs = [(await reserve_ok(cooled, drop.id))[0] for _ in range(2)]
    results = await cooled.release_many(refs, ReleaseReason.CANCELLED)  # as DropService.cancel
    assert {r.outcome for r in results} == {ReleaseOutcome.RELEASED}
    for ref in refs:
        assert await _cooldown_pttl(redis, ref) == -2
        await reserve_ok(cooled, drop.id, ref.user_id)


async def test_a_voided_purchase_claim_arms_no_cooldown(
    redis: Redis, cooled: HoldStore, make_drop: MakeDrop
) -> None:
    """VOIDED: the server could not finish the user's purchase in time; not the user's doing."""
    drop = await make_drop(total=2)
    ref, _ = await reserve_ok(cooled, drop.id)
    result = await cooled.release(ref, ReleaseReason.VOIDED)
    assert result.outcome is ReleaseOutcome.RELEASED
    assert await _cooldown_pttl(redis, ref) == -2
    await reserve_ok(cooled, drop.id, ref.user_id)


async def test_a_release_that_returns_nothing_arms_no_cooldown(
    redis: Redis, cooled: HoldStore, make_drop: MakeDrop
) -> None:
    """Another user's cancel (NOT_FOUND) and an early expiry (NOT_DUE) write nothing."""
    drop = await make_drop(total=2)
    ref, _ = await reserve_ok(cooled, drop.id)
    before = await snapshot(redis, drop.id)
    stranger = await cooled.release(ref, ReleaseReason.CANCELLED, new_id())
    early = await cooled.release(ref, ReleaseReason.EXPIRED)
    assert (stranger.outcome, early.outcome) == (ReleaseOutcome.NOT_FOUND, ReleaseOutcome.NOT_DUE)
    assert await snapshot(redis, drop.id) == before


async def test_cooldown_zero_turns_it_off(
    redis: Redis, hold_store: HoldStore, cooled: HoldStore, make_drop: MakeDrop
) -> None:
    """0 arms nothing, and a reserve with 0 does not read a cooldown another setting left."""
    assert hold_store.cooldown_ms == 0
    drop = await make_drop(total=2, limit=2)
    ref, _ = await reserve_ok(hold_store, drop.id)
    await hold_store.release(ref, ReleaseReason.CANCELLED, ref.user_id)
    assert await _cooldown_pttl(redis, ref) == -2
    await reserve_ok(hold_store, drop.id, ref.user_id)

    other, _ = await reserve_ok(cooled, drop.id)
    await cooled.release(other, ReleaseReason.CANCELLED, other.user_id)
    assert await _cooldown_pttl(redis, other) > 0
    await reserve_ok(hold_store, drop.id, other.user_id)


async def test_reserve_works_once_the_cooldown_passed(
    redis: Redis, scripts: Scripts, make_drop: MakeDrop
) -> None:
    store = HoldStore(redis, scripts, cooldown_ms=1_000)
    drop = await make_drop(total=2)
    ref, _ = await reserve_ok(store, drop.id)
    await store.release(ref, ReleaseReason.CANCELLED, ref.user_id)
    closed = await closed_entry(redis, ref)
    assert closed is not None
    await _assert_cooling(redis, store, drop.id, ref.user_id, cooldown_ms=1_000)
    # The key's TTL ran from the release's script time (closedMs), on Redis's own clock.
    await wait_for_redis_time(redis, int(closed.extra) + 1_000 + 1)
    await reserve_ok(store, drop.id, ref.user_id)


async def test_the_released_unit_goes_to_another_user_during_the_cooldown(
    redis: Redis, cooled: HoldStore, make_drop: MakeDrop
) -> None:
    drop = await make_drop(total=1, limit=1)
    ref, _ = await reserve_ok(cooled, drop.id)
    await cooled.release(ref, ReleaseReason.CANCELLED, ref.user_id)
    await _assert_cooling(redis, cooled, drop.id, ref.user_id)
    taker, _ = await reserve_ok(cooled, drop.id)
    assert await users_hash(redis, drop.id) == {taker.user_id: "1"}
    # Sold out now, but the holder still hears COOLDOWN (see the order below).
    await _assert_cooling(redis, cooled, drop.id, ref.user_id)


async def test_refusal_order_not_live_then_limit_then_cooldown_then_sold_out(
    redis: Redis, cooled: HoldStore, make_drop: MakeDrop
) -> None:
    """A user at their limit hears LIMIT_REACHED (waiting would not help), a user in
    cooldown hears COOLDOWN even when nothing is left (no unit that comes back during it
    could be theirs; Retry-After says when asking again makes sense)."""
    user = new_id()
    for drop_args, expected in (
        ({"starts_in_s": 60}, ReserveOutcome.DROP_NOT_LIVE),
        ({"total": 3, "sold": 1, "purchases_by_user": {user: 1}}, ReserveOutcome.LIMIT_REACHED),
        ({"total": 1, "sold": 1, "purchases_by_user": {new_id(): 1}}, ReserveOutcome.COOLDOWN),
        ({"total": 1, "sold": 1, "purchases_by_user": {new_id(): 1}}, ReserveOutcome.SOLD_OUT),
    ):
        drop = await make_drop(limit=1, **drop_args)
        if expected is not ReserveOutcome.SOLD_OUT:
            await redis.set(DropKeys(drop.id).cooldown(user), "1", px=COOLDOWN_MS)
        before = await snapshot(redis, drop.id)
        result = await cooled.reserve(new_ref(drop.id, user), TTL_MS)
        assert result.outcome is expected, (drop_args, result)
        assert await snapshot(redis, drop.id) == before
