"""purchase_claim.lua, purchase_commit.lua, purchase_abort.lua: every reply and its state."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from redis.asyncio import Redis

from app.store.holds import AbortOutcome, ClaimOutcome, HoldStore, ReleaseOutcome, ReleaseReason
from app.store.keys import DropKeys, HoldRef, new_id
from app.store.scripts import ScriptName
from tests.support.lua_fixtures import (
    TTL_MS,
    MakeDrop,
    closed_entry,
    drop_hash,
    due_score,
    hold_entry,
    mirrored_fields,
    new_ref,
    redis_now_ms,
    reserve_ok,
    snapshot,
    timer_pttl,
    user_holds,
    users_hash,
    wait_for_redis_time,
)

CLAIM_MS = 30_000
BUYER_NAME = "Ada"
BUYER_AT = datetime(2030, 1, 1, tzinfo=UTC)
BUYER = '{"displayName":"Ada","purchasedAt":"2030-01-01T00:00:00.000Z"}'


async def test_claim_moves_an_active_hold_to_purchasing(
    redis: Redis, hold_store: HoldStore, make_drop: MakeDrop
) -> None:
    drop = await make_drop(total=3)
    ref, held = await reserve_ok(hold_store, drop.id)
    before = await redis_now_ms(redis)
    result = await hold_store.claim(ref, "claim-1", CLAIM_MS)
    after = await redis_now_ms(redis)

    assert (result.outcome, result.expires_at_ms) == (ClaimOutcome.CLAIMED, held.expires_at_ms)
    entry = await hold_entry(redis, ref)
    assert entry is not None
    assert (entry.state, entry.user_id, entry.expires_at_ms, entry.created_at_ms) == (
        "PURCHASING",
        ref.user_id,
        held.expires_at_ms,
        held.created_at_ms,
    )
    assert entry.extra == "claim-1"
    assert await timer_pttl(redis, ref) == -2
    score = await due_score(redis, ref)
    assert score is not None
    assert before + CLAIM_MS <= score <= after + CLAIM_MS
    assert await drop_hash(redis, drop.id) == mirrored_fields(drop, avail=2, purchasing=1)
    assert await users_hash(redis, drop.id) == {ref.user_id: "1"}
    assert await user_holds(redis, ref) == {ref.hold_id}


async def test_second_claim_is_in_progress_and_changes_nothing(
    redis: Redis, hold_store: HoldStore, make_drop: MakeDrop
) -> None:
    drop = await make_drop()
    ref, held = await reserve_ok(hold_store, drop.id)
    assert (await hold_store.claim(ref, "claim-1", CLAIM_MS)).outcome is ClaimOutcome.CLAIMED
    before = await snapshot(redis, drop.id)
    again = await hold_store.claim(ref, "claim-2", CLAIM_MS)
    assert (again.outcome, again.expires_at_ms) == (ClaimOutcome.IN_PROGRESS, held.expires_at_ms)
    assert await snapshot(redis, drop.id) == before  # still claim-1's, still one purchasing


async def test_claim_past_the_deadline_is_due_even_with_a_timer_left(
    redis: Redis, hold_store: HoldStore, make_drop: MakeDrop
) -> None:
    drop = await make_drop()
    ref, held = await reserve_ok(hold_store, drop.id, ttl_ms=50)
    await wait_for_redis_time(redis, held.expires_at_ms)
    # Redis expires keys lazily: the timer may outlive the deadline.
    await redis.set(DropKeys(drop.id).timer(ref.hold_id), "1", px=TTL_MS)
    before = await snapshot(redis, drop.id)
    result = await hold_store.claim(ref, "claim-1", CLAIM_MS)
    assert (result.outcome, result.expires_at_ms) == (ClaimOutcome.DUE, 0)
    assert await snapshot(redis, drop.id) == before


async def test_claim_of_an_ended_hold_names_how_it_ended(
    redis: Redis, hold_store: HoldStore, make_drop: MakeDrop
) -> None:
    drop = await make_drop(total=5, limit=3)
    user = new_id()
    cancelled, _ = await reserve_ok(hold_store, drop.id, user)
    await hold_store.release(cancelled, ReleaseReason.CANCELLED, user)
    expired, _ = await reserve_ok(hold_store, drop.id, user)
    await hold_store.release(expired, ReleaseReason.VOIDED)
    bought, _ = await reserve_ok(hold_store, drop.id, user)
    assert await hold_store.commit(bought, BUYER_NAME, BUYER_AT) == ("COMMITTED", "")
    before = await snapshot(redis, drop.id)
    for ref, outcome in (
        (cancelled, ClaimOutcome.CANCELLED),
        (expired, ClaimOutcome.EXPIRED),
        (bought, ClaimOutcome.PURCHASED),
    ):
        assert (await hold_store.claim(ref, "claim-x", CLAIM_MS)).outcome is outcome
    assert await snapshot(redis, drop.id) == before


async def test_claim_of_another_users_or_unknown_hold_is_not_found(
    redis: Redis, hold_store: HoldStore, make_drop: MakeDrop
) -> None:
    drop = await make_drop()
    live, _ = await reserve_ok(hold_store, drop.id)
    ended, _ = await reserve_ok(hold_store, drop.id)
    await hold_store.release(ended, ReleaseReason.CANCELLED, ended.user_id)
    before = await snapshot(redis, drop.id)
    stranger = new_id()
    for ref in (live, ended):
        as_stranger = HoldRef(ref.drop_id, stranger, ref.hold_id)
        assert (await hold_store.claim(as_stranger, "c", CLAIM_MS)).outcome is (
            ClaimOutcome.NOT_FOUND
        )
    assert (await hold_store.claim(new_ref(drop.id), "c", CLAIM_MS)).outcome is (
        ClaimOutcome.NOT_FOUND
    )
    assert await snapshot(redis, drop.id) == before


async def test_commit_counts_the_sale_and_ends_the_hold(
    redis: Redis, hold_store: HoldStore, make_drop: MakeDrop
) -> None:
    drop = await make_drop(total=3)
    ref, held = await reserve_ok(hold_store, drop.id)
    await hold_store.claim(ref, "claim-1", CLAIM_MS)
    before = await redis_now_ms(redis)
    assert await hold_store.commit(ref, BUYER_NAME, BUYER_AT) == ("COMMITTED", "")
    after = await redis_now_ms(redis)

    keys = DropKeys(drop.id)
    assert await drop_hash(redis, drop.id) == mirrored_fields(drop, avail=2, sold=1)
    assert await users_hash(redis, drop.id) == {ref.user_id: "1"}  # a purchase still counts
    assert await hold_entry(redis, ref) is None
    assert await due_score(redis, ref) is None
    assert await timer_pttl(redis, ref) == -2
    assert await user_holds(redis, ref) == set()
    closed = await closed_entry(redis, ref)
    assert closed is not None
    assert (closed.state, closed.user_id, closed.expires_at_ms, closed.created_at_ms) == (
        "PURCHASED",
        ref.user_id,
        held.expires_at_ms,
        held.created_at_ms,
    )
    assert before <= int(closed.extra) <= after
    assert await redis.zscore(keys.closed_at, ref.hold_id) == int(closed.extra)
    assert await redis.lrange(keys.buyers, 0, -1) == [BUYER]


async def test_commit_repeat_is_noop_with_the_closed_state(
    redis: Redis, hold_store: HoldStore, make_drop: MakeDrop
) -> None:
    drop = await make_drop()
    bought, _ = await reserve_ok(hold_store, drop.id)
    cancelled, _ = await reserve_ok(hold_store, drop.id)
    assert await hold_store.commit(bought, BUYER_NAME, BUYER_AT) == ("COMMITTED", "")
    await hold_store.release(cancelled, ReleaseReason.CANCELLED, cancelled.user_id)
    before = await snapshot(redis, drop.id)
    assert await hold_store.commit(bought, BUYER_NAME, BUYER_AT) == ("NOOP", "PURCHASED")
    assert await hold_store.commit(cancelled, BUYER_NAME, BUYER_AT) == ("NOOP", "CANCELLED")
    assert await hold_store.commit(new_ref(drop.id), BUYER_NAME, BUYER_AT) == ("NOOP", "")
    assert await snapshot(redis, drop.id) == before


async def test_commit_of_an_unclaimed_active_hold_commits(
    redis: Redis, hold_store: HoldStore, make_drop: MakeDrop
) -> None:
    drop = await make_drop(total=2)
    ref, _ = await reserve_ok(hold_store, drop.id)
    assert await hold_store.commit(ref, BUYER_NAME, BUYER_AT) == ("COMMITTED", "")
    assert await drop_hash(redis, drop.id) == mirrored_fields(drop, avail=1, sold=1)
    assert await timer_pttl(redis, ref) == -2
    assert await hold_entry(redis, ref) is None
    assert await due_score(redis, ref) is None


async def test_buyers_are_newest_first_and_trimmed_to_five(
    redis: Redis, hold_store: HoldStore, make_drop: MakeDrop
) -> None:
    drop = await make_drop(total=6)
    names = [f"buyer-{i}" for i in range(6)]
    for name in names:
        ref, _ = await reserve_ok(hold_store, drop.id)
        assert (await hold_store.claim(ref, f"c-{name}", CLAIM_MS)).outcome is (
            ClaimOutcome.CLAIMED
        )
        assert await hold_store.commit(ref, name, BUYER_AT) == (
            "COMMITTED",
            "",
        )
    buyers = await redis.lrange(DropKeys(drop.id).buyers, 0, -1)
    assert [orjson.loads(b)["displayName"] for b in buyers] == names[::-1][:5]
    assert await drop_hash(redis, drop.id) == mirrored_fields(drop, avail=0, sold=6)


async def test_abort_restores_the_hold_with_its_remaining_time(
    redis: Redis, hold_store: HoldStore, make_drop: MakeDrop
) -> None:
    drop = await make_drop(total=3)
    ref, held = await reserve_ok(hold_store, drop.id)
    await hold_store.claim(ref, "claim-1", CLAIM_MS)
    raw = await _abort_reply(hold_store, ref, "claim-1")
    now = await redis_now_ms(redis)

    assert raw[0] == "RESTORED"
    remaining = int(raw[1])
    assert held.expires_at_ms - now <= remaining <= TTL_MS
    entry = await hold_entry(redis, ref)
    assert entry is not None
    assert (entry.state, entry.user_id, entry.expires_at_ms, entry.created_at_ms) == (
        "ACTIVE",
        ref.user_id,
        held.expires_at_ms,
        held.created_at_ms,
    )
    assert entry.extra == ""
    assert remaining - 2_000 <= await timer_pttl(redis, ref) <= remaining
    assert await due_score(redis, ref) == held.expires_at_ms
    assert await drop_hash(redis, drop.id) == mirrored_fields(drop, avail=2)
    assert await users_hash(redis, drop.id) == {ref.user_id: "1"}


async def test_abort_without_time_left_is_restored_due(
    redis: Redis, hold_store: HoldStore, make_drop: MakeDrop
) -> None:
    drop = await make_drop(total=3)
    ref, held = await reserve_ok(hold_store, drop.id, ttl_ms=300)
    assert (await hold_store.claim(ref, "claim-1", CLAIM_MS)).outcome is ClaimOutcome.CLAIMED
    await wait_for_redis_time(redis, held.expires_at_ms)
    assert await hold_store.abort(ref, "claim-1") is AbortOutcome.RESTORED_DUE
    entry = await hold_entry(redis, ref)
    assert entry is not None
    assert (entry.state, entry.extra) == ("ACTIVE", "")
    assert await timer_pttl(redis, ref) == -2
    assert await due_score(redis, ref) == held.expires_at_ms
    assert await drop_hash(redis, drop.id) == mirrored_fields(drop, avail=2)
    # The caller then releases it, and only release.lua returns the unit.
    released = await hold_store.release(ref, ReleaseReason.EXPIRED)
    assert (released.outcome, released.available) == (ReleaseOutcome.RELEASED, 3)


async def test_abort_is_noop_unless_this_claim_holds_it(
    redis: Redis, hold_store: HoldStore, make_drop: MakeDrop
) -> None:
    drop = await make_drop()
    claimed, _ = await reserve_ok(hold_store, drop.id)
    active, _ = await reserve_ok(hold_store, drop.id)
    await hold_store.claim(claimed, "claim-1", CLAIM_MS)
    before = await snapshot(redis, drop.id)
    assert await hold_store.abort(claimed, "claim-2") is AbortOutcome.NOOP
    assert await hold_store.abort(active, "") is AbortOutcome.NOOP
    assert await hold_store.abort(new_ref(drop.id), "") is AbortOutcome.NOOP
    assert await snapshot(redis, drop.id) == before


async def test_abort_with_an_empty_claim_id_aborts_any_claim(
    redis: Redis, hold_store: HoldStore, make_drop: MakeDrop
) -> None:
    drop = await make_drop(total=3)
    ref, held = await reserve_ok(hold_store, drop.id)
    await hold_store.claim(ref, "claim-1", CLAIM_MS)
    assert await hold_store.abort(ref, "") is AbortOutcome.RESTORED
    entry = await hold_entry(redis, ref)
    assert entry is not None
    assert (entry.state, entry.extra) == ("ACTIVE", "")
    assert await due_score(redis, ref) == held.expires_at_ms
    assert (await drop_hash(redis, drop.id))["purchasing"] == "0"


async def _abort_reply(hold_store: HoldStore, ref: HoldRef, claim_id: str) -> list[Any]:
    """The raw reply of purchase_abort.lua (the typed wrapper drops remainingMs)."""
    keys = DropKeys(ref.drop_id)
    return await hold_store.scripts.run(
        ScriptName.PURCHASE_ABORT,
        [keys.drop, keys.holds, keys.due, keys.timer(ref.hold_id)],
        [ref.hold_id, claim_id],
    )
