"""The invariant helper fails on each kind of drift it checks (a check that cannot fail
proves nothing): each case corrupts one drop's Redis state the way a buggy script could."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from redis.asyncio import Redis

from app.container import Container
from app.store.entries import parse_entry
from app.store.keys import DropKeys, HoldRef, parse_hold_id
from tests.integration.engine.helpers import AppFactory, redis_now_ms, reserve, users
from tests.support.factories import (
    admin_token,
    assert_holds_in_step,
    assert_invariant,
    auth,
    create_drop,
)

Corrupt = Callable[[Container, DropKeys, list[HoldRef]], Awaitable[None]]


async def _entry(redis: Redis, keys: DropKeys, ref: HoldRef) -> str:
    return str(await redis.hget(keys.holds, ref.hold_id))


async def _unindexed(container: Container, keys: DropKeys, refs: list[HoldRef]) -> None:
    await container.redis.zrem(keys.due, refs[0].hold_id)


async def _ghost_due(container: Container, keys: DropKeys, refs: list[HoldRef]) -> None:
    ghost = f"{keys.drop_id}.{refs[0].user_id}.{'0' * 16}"
    await container.redis.zadd(keys.due, {ghost: await redis_now_ms(container) + 60_000})


async def _due_moved(container: Container, keys: DropKeys, refs: list[HoldRef]) -> None:
    entry = parse_entry(await _entry(container.redis, keys, refs[0]))
    await container.redis.zadd(keys.due, {refs[0].hold_id: entry.expires_at_ms + 5_000})


async def _timer_gone(container: Container, keys: DropKeys, refs: list[HoldRef]) -> None:
    await container.redis.delete(keys.timer(refs[0].hold_id))


async def _timer_too_long(container: Container, keys: DropKeys, refs: list[HoldRef]) -> None:
    await container.redis.pexpire(keys.timer(refs[0].hold_id), 600_000)


async def _user_count_drift(container: Container, keys: DropKeys, refs: list[HoldRef]) -> None:
    await container.redis.hincrby(keys.users, refs[0].user_id, 1)


async def _over_the_limit(container: Container, keys: DropKeys, refs: list[HoldRef]) -> None:
    """A second hold for a user at the limit of 1, written whole (counters, due, timer,
    user set) as reserve.lua would have, had it not checked the limit."""
    redis, first = container.redis, refs[0]
    entry = parse_entry(await _entry(redis, keys, first))
    second = f"{keys.drop_id}.{first.user_id}.{'1' * 16}"
    pipe = redis.pipeline(transaction=True)
    pipe.hincrby(keys.drop, "avail", -1)
    pipe.hincrby(keys.users, first.user_id, 1)
    pipe.hset(keys.holds, second, await _entry(redis, keys, first))
    pipe.zadd(keys.due, {second: entry.expires_at_ms})
    pipe.set(keys.timer(second), "1", px=entry.expires_at_ms - await redis_now_ms(container))
    pipe.sadd(keys.user_holds(first.user_id), second)
    await pipe.execute()


async def _stale_claim(container: Container, keys: DropKeys, refs: list[HoldRef]) -> None:
    """PURCHASING with a claim deadline 10 s ago, as a purchaser that died leaves it."""
    redis, ref = container.redis, refs[0]
    entry = parse_entry(await _entry(redis, keys, ref))
    claimed = f"PURCHASING|{entry.user_id}|{entry.expires_at_ms}|{entry.created_at_ms}|c1"
    pipe = redis.pipeline(transaction=True)
    pipe.hset(keys.holds, ref.hold_id, claimed)
    pipe.zadd(keys.due, {ref.hold_id: await redis_now_ms(container) - 10_000})
    pipe.delete(keys.timer(ref.hold_id))
    pipe.hincrby(keys.drop, "purchasing", 1)
    await pipe.execute()


async def _user_set_drift(container: Container, keys: DropKeys, refs: list[HoldRef]) -> None:
    await container.redis.srem(keys.user_holds(refs[0].user_id), refs[0].hold_id)


async def _ended_state_left_live(container: Container, keys: DropKeys, refs: list[HoldRef]) -> None:
    entry = await _entry(container.redis, keys, refs[0])
    await container.redis.hset(keys.holds, refs[0].hold_id, "EXPIRED" + entry[len("ACTIVE") :])


async def _stale_size(container: Container, keys: DropKeys, refs: list[HoldRef]) -> None:
    ghost = f"{keys.drop_id}.{refs[0].user_id}.{'0' * 16}"
    await container.redis.hset(keys.hold_sizes, ghost, "1")


CASES: dict[str, tuple[Corrupt, str]] = {
    "hold-without-due-entry": (_unindexed, "live holds without a due entry"),
    "due-entry-without-hold": (_ghost_due, "due entries without a live hold"),
    "due-score-is-not-expiry": (_due_moved, "ACTIVE, due at"),
    "active-without-timer": (_timer_gone, "but no timer"),
    "timer-outlives-hold": (_timer_too_long, "timer outlives the hold"),
    "users-hash-drift": (_user_count_drift, "users hash says 2"),
    "over-the-limit": (_over_the_limit, "2 held or bought, over the limit 1"),
    "stale-claim": (_stale_claim, "past its claim deadline"),
    "user-set-drift": (_user_set_drift, "live-hold set"),
    "ended-state-left-live": (_ended_state_left_live, "a live hold in state EXPIRED"),
    "size-of-no-live-hold": (_stale_size, "sizes of no live hold"),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_the_invariant_helper_catches(make_app: AppFactory, case: str) -> None:
    # No sweeper pass or expiry event may repair the state before the helper reads it.
    client, container = await make_app(sweep_interval_ms=60_000)
    admin = await admin_token(client, container)
    drop = await create_drop(client, admin, totalStock=5, perUserLimit=1)
    crowd = await users(container, 3)
    refs = []
    for user in crowd:
        held = await reserve(client, drop["id"], user.access_token)
        assert held.status_code == 201
        ref = parse_hold_id(held.json()["id"])
        assert ref is not None
        refs.append(ref)
    await assert_invariant(container, drop["id"])  # whole before the corruption

    corrupt, message = CASES[case]
    await corrupt(container, DropKeys(drop["id"]), refs)

    with pytest.raises(AssertionError, match=message):
        await assert_invariant(container, drop["id"])
    if case == "stale-claim":  # what a caller asserting right after a crash may waive
        await assert_invariant(container, drop["id"], allow_stale_claims=True)


async def test_the_invariant_helper_catches_a_sized_hold_without_its_size(
    make_app: AppFactory,
) -> None:
    client, container = await make_app(sweep_interval_ms=60_000)
    admin = await admin_token(client, container)
    created = await client.post(
        "/api/drops",
        json={"name": "Sized", "priceCents": 100, "sizes": [{"size": "42", "totalStock": 3}]},
        headers=auth(admin),
    )
    assert created.status_code == 201, created.text
    drop_id = created.json()["id"]
    (user,) = await users(container, 1)
    held = await client.post(
        f"/api/drops/{drop_id}/reserve", json={"size": "42"}, headers=auth(user.access_token)
    )
    assert held.status_code == 201, held.text
    await assert_invariant(container, drop_id)

    await container.redis.hdel(DropKeys(drop_id).hold_sizes, held.json()["id"])

    # The reconciler's per-size count misses it too; the live-hold check names it.
    with pytest.raises(AssertionError, match="live holds without a size"):
        await assert_holds_in_step(container.redis, drop_id)
