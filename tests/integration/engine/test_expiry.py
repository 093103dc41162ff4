"""Expiry returns each unit exactly once, whichever layer gets there first."""

from __future__ import annotations

import asyncio

import httpx

from app import metrics
from app.container import Container
from app.store import keys
from app.store.holds import ReleaseReason
from tests.integration.engine.helpers import (
    AppFactory,
    available,
    background_of,
    deadline_ms,
    past_redis_start,
    purchase,
    redis_now_ms,
    redis_time_reached,
    reserve,
    stock_is,
    stop_listener,
    users,
    wait_until,
)
from tests.support.factories import admin_token, assert_invariant, auth, create_drop

SHORT = {"reservation_ttl_seconds": 1}


def expired_by(layer: str) -> float:
    return metrics.HOLDS_EXPIRED.labels(layer=layer)._value.get()


def passes_timed(task: str) -> float:
    """How many passes of a background loop `sneakerdrop_background_pass_seconds` timed."""
    for family in metrics.BACKGROUND_PASS.collect():
        for sample in family.samples:
            if sample.name.endswith("_count") and sample.labels.get("task") == task:
                return sample.value
    return 0.0


async def _hold_many(
    client: httpx.AsyncClient, container: Container, count: int, total: int
) -> str:
    admin = await admin_token(client, container)
    drop = await create_drop(client, admin, totalStock=total)
    crowd = await users(container, count)
    held = await asyncio.gather(*(reserve(client, drop["id"], s.access_token) for s in crowd))
    assert all(r.status_code == 201 for r in held)
    assert await available(container, drop["id"]) == total - count
    return str(drop["id"])


async def _closed_states(container: Container, drop_id: str) -> list[str]:
    closed = await container.redis.hvals(keys.DropKeys(drop_id).closed)  # type: ignore[misc]
    return [str(entry).split("|", 1)[0] for entry in closed]


async def test_keyspace_events_release_holds(make_app: AppFactory) -> None:
    client, container = await make_app(**SHORT, sweep_interval_ms=60_000)
    await container.redis.config_set("notify-keyspace-events", "Ex")
    await past_redis_start(container)
    before = expired_by("keyspace")
    drop_id = await _hold_many(client, container, 10, 10)

    await wait_until(lambda: stock_is(container, drop_id, 10), within=5, what="expiry")

    assert expired_by("keyspace") - before == 10
    assert sorted(await _closed_states(container, drop_id)) == ["EXPIRED"] * 10
    await assert_invariant(container, drop_id)


async def test_sweeper_releases_when_notifications_are_off(make_app: AppFactory) -> None:
    client, container = await make_app(**SHORT, sweep_interval_ms=100)
    await background_of(client).listener.subscribed.wait()  # it re-applies the flags on connect
    await container.redis.config_set("notify-keyspace-events", "")
    before = expired_by("sweeper")
    passes_before = passes_timed("sweeper")
    drop_id = await _hold_many(client, container, 8, 10)

    await wait_until(lambda: stock_is(container, drop_id, 10), within=5, what="sweep")
    assert passes_timed("sweeper") > passes_before

    assert expired_by("sweeper") - before == 8, {
        layer: expired_by(layer) for layer in ("keyspace", "sweeper", "reconciler", "purchase")
    }
    await container.redis.config_set("notify-keyspace-events", "Ex")
    await assert_invariant(container, drop_id)


async def test_sweeper_releases_when_the_listener_is_killed(make_app: AppFactory) -> None:
    client, container = await make_app(**SHORT, sweep_interval_ms=100)
    await stop_listener(background_of(client))
    drop_id = await _hold_many(client, container, 6, 6)

    await wait_until(lambda: stock_is(container, drop_id, 6), within=5, what="sweep")
    await assert_invariant(container, drop_id)


async def test_all_layers_at_once_release_each_unit_once(make_app: AppFactory) -> None:
    """Two app instances listening, sweepers and reconcilers racing: exactly one release each."""
    fast = {**SHORT, "sweep_interval_ms": 50, "reconcile_interval_seconds": 1}
    client, container = await make_app(**fast)
    _, other = await make_app(**fast)
    await container.redis.config_set("notify-keyspace-events", "Ex")
    drop_id = await _hold_many(client, container, 40, 50)

    await wait_until(lambda: stock_is(container, drop_id, 50), within=6, what="expiry")
    # Let every layer have another go at the same holds: nothing may come back twice.
    await other.hold_service.hold_store.release(
        keys.HoldRef(drop_id, "0" * 16, f"{drop_id}.{'0' * 16}.{'0' * 16}"),
        ReleaseReason.EXPIRED,
    )
    await background_of(client).sweeper.sweep([drop_id])
    await background_of(client).reconciler.run_once()

    assert await available(container, drop_id) == 50
    assert sorted(await _closed_states(container, drop_id)) == ["EXPIRED"] * 40
    await assert_invariant(container, drop_id)


async def test_a_passed_deadline_counts_as_expired_before_cleanup(make_app: AppFactory) -> None:
    client, container = await make_app(**SHORT, sweep_interval_ms=60_000)
    await background_of(client).listener.subscribed.wait()
    await container.redis.config_set("notify-keyspace-events", "")
    await stop_listener(background_of(client))
    admin = await admin_token(client, container)
    drop = await create_drop(client, admin, totalStock=2)
    (user,) = await users(container, 1)
    held = (await reserve(client, drop["id"], user.access_token)).json()
    assert await redis_now_ms(container) < deadline_ms(held)
    await wait_until(lambda: redis_time_reached(container, deadline_ms(held)), within=3)

    mine = await client.get("/api/me/reservations", headers=auth(user.access_token))
    assert mine.json() == []
    late = await purchase(client, held["id"], user.access_token)
    assert late.status_code == 410
    assert late.json()["code"] == "RESERVATION_EXPIRED"
    # The late purchase released it on the spot: the unit is back without any sweeper.
    assert await available(container, drop["id"]) == 2
    await container.redis.config_set("notify-keyspace-events", "Ex")
    await assert_invariant(container, drop["id"])


async def test_purchase_racing_expiry_never_both(make_app: AppFactory) -> None:
    """Over many trials, a purchase and an expiry of the same hold never both win."""
    client, container = await make_app(**SHORT, sweep_interval_ms=60_000)
    admin = await admin_token(client, container)
    drop = await create_drop(client, admin, totalStock=60, perUserLimit=60)
    (user,) = await users(container, 1)
    holds = [(await reserve(client, drop["id"], user.access_token)).json() for _ in range(40)]

    async def race(trial: int, held: dict[str, str]) -> tuple[bool, bool]:
        ref = keys.parse_hold_id(held["id"])
        assert ref is not None
        # Aim both at the deadline, staggered by a few ms either side.
        aim = deadline_ms(held) - 4 + trial % 9
        await wait_until(lambda: redis_time_reached(container, aim), within=3)
        bought, released = await asyncio.gather(
            purchase(client, held["id"], user.access_token),
            container.hold_store.release(ref, ReleaseReason.EXPIRED),
        )
        sold = bought.status_code in (200, 201)
        returned = released.outcome == "RELEASED" or bought.status_code == 410
        return sold, returned

    results = await asyncio.gather(*(race(i, h) for i, h in enumerate(holds)))

    assert all(sold != returned for sold, returned in results), results
    sold_count = sum(sold for sold, _ in results)
    view = (await client.get(f"/api/drops/{drop['id']}")).json()
    assert view["availableStock"] == 60 - sold_count
    await assert_invariant(container, drop["id"])
