"""Redis restored from an older snapshot: a hold bought after the snapshot comes back ACTIVE.

PostgreSQL has the purchase; Redis, rolled back, shows a live hold and one unit fewer
sold. That unit must never go back to stock: not when the restored hold's deadline
passes (sweeper, reconciler or expiry listener), not when its owner cancels it; a
retry answers the recorded purchase, and the sale is counted again.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from app.background.sweeper import Sweeper
from app.container import Container
from app.services.auth import Session
from app.store import keys
from tests.integration.engine.helpers import (
    AppFactory,
    deadline_ms,
    purchase,
    redis_time_reached,
    reserve,
    users,
    wait_until,
)
from tests.support.factories import admin_token, assert_invariant, auth, create_drop
from tests.support.faults import hold_state, purchase_counts, sneakerdrop_check
from tests.support.owned_stores import OwnedValkey
from tests.support.stores import StoreUrls

FAST = {"reconcile_interval_seconds": 1, "sweep_interval_ms": 100}
NO_PASSES = {"sweep_interval_ms": 60_000, "reconcile_interval_seconds": 3600}


async def held_in_new_drop(
    client: httpx.AsyncClient, container: Container, total_stock: int, users_count: int
) -> tuple[dict[str, Any], dict[str, Any], list[Session]]:
    """A new drop and `users_count` users, the first of whom holds a unit of it.

    Returns (drop, the hold, the users)."""
    admin = await admin_token(client, container)
    drop = await create_drop(client, admin, totalStock=total_stock)
    people = await users(container, users_count)
    held = (await reserve(client, drop["id"], people[0].access_token)).json()
    return drop, held, people


async def bought_then_restored(
    client: httpx.AsyncClient,
    container: Container,
    owned_redis: OwnedValkey,
    tmp_path: Path,
    *,
    wait_past_deadline: bool,
) -> tuple[dict[str, Any], dict[str, Any], str, str]:
    """One unit: held, snapshotted, bought, then Redis restarted from the snapshot.

    Returns (drop, the hold, the buyer's token, the purchase id).
    """
    drop, held, (buyer,) = await held_in_new_drop(client, container, 1, users_count=1)
    snapshot = owned_redis.snapshot(tmp_path / "snapshot")
    bought = await purchase(client, held["id"], buyer.access_token)
    assert bought.status_code == 201
    if wait_past_deadline:  # the restored hold is then already due: the sweeper sees it at once
        await wait_until(
            lambda: redis_time_reached(container, deadline_ms(held)), within=10, what="deadline"
        )
    owned_redis.kill()
    await asyncio.to_thread(owned_redis.restart, restore_from=snapshot)
    if wait_past_deadline:
        # Rolled back, and already due: the sweeper may settle it (as sold, asking
        # PostgreSQL) before this line reads it. Never released, either way.
        assert await hold_state(container, held["id"]) in {"ACTIVE", "PURCHASED"}
        assert (await container.drop_store.counters(drop["id"]) or ())[:2] == (1, 0)
    else:
        assert await hold_state(container, held["id"]) == "ACTIVE"  # rolled back
        assert await container.drop_store.counters(drop["id"]) == (1, 0, 0, 1)
    return drop, held, buyer.access_token, bought.json()["id"]


async def never_back_in_stock(container: Container, drop_id: str, reservation_id: str) -> bool:
    """Polled until the restored hold is settled; every sample must show no unit available."""
    counters = await container.drop_store.counters(drop_id)
    assert counters is not None
    assert counters[1] == 0, f"the bought unit went back to stock: {counters}"
    return await hold_state(container, reservation_id) == "PURCHASED"


async def assert_settled(
    client: httpx.AsyncClient, container: Container, drop: dict[str, Any], held: dict[str, Any]
) -> None:
    """One purchase, counted once; nobody else can reserve the unit; `check` agrees."""
    assert await purchase_counts(container, drop["id"]) == {held["id"]: 1}
    assert await container.drop_store.counters(drop["id"]) == (1, 0, 1, 0)
    (late,) = await users(container, 1, prefix="late")
    refused = await reserve(client, drop["id"], late.access_token)
    assert refused.status_code == 409
    assert refused.json()["code"] == "SOLD_OUT"
    await assert_invariant(container, drop["id"])


async def test_restored_hold_past_its_deadline_is_committed_not_released(
    make_app: AppFactory, owned_redis: OwnedValkey, stores: StoreUrls, tmp_path: Path
) -> None:
    client, container = await make_app(reservation_ttl_seconds=2, **FAST)
    drop, held, token, bought_id = await bought_then_restored(
        client, container, owned_redis, tmp_path, wait_past_deadline=True
    )

    # The sweeper and the reconciler both see a due ACTIVE hold that PostgreSQL says is sold.
    await wait_until(
        lambda: never_back_in_stock(container, drop["id"], held["id"]),
        within=10,
        what="restored hold settled",
    )
    again = await purchase(client, held["id"], token)
    assert again.status_code == 200, again.text  # the same purchase, never a second one
    assert again.json()["id"] == bought_id
    await assert_settled(client, container, drop, held)
    await sneakerdrop_check(stores, tmp_path / "data")


async def test_restored_hold_cancelled_by_its_owner_stays_sold(
    make_app: AppFactory, owned_redis: OwnedValkey, stores: StoreUrls, tmp_path: Path
) -> None:
    client, container = await make_app(**FAST)
    drop, held, token, _ = await bought_then_restored(
        client, container, owned_redis, tmp_path, wait_past_deadline=False
    )

    # The buyer sees the hold again and cancels it before the reconciler came by.
    cancelled = await client.delete(f"/api/reservations/{held['id']}", headers=auth(token))
    assert cancelled.status_code == 409, cancelled.text
    assert cancelled.json()["code"] == "RESERVATION_PURCHASED"
    await wait_until(
        lambda: never_back_in_stock(container, drop["id"], held["id"]),
        within=10,
        what="restored hold settled",
    )
    await assert_settled(client, container, drop, held)
    await sneakerdrop_check(stores, tmp_path / "data")


async def test_restored_hold_past_its_deadline_bought_again_answers_the_purchase(
    make_app: AppFactory, owned_redis: OwnedValkey, stores: StoreUrls, tmp_path: Path
) -> None:
    # No sweeper or reconciler pass comes by: the buyer's retry meets the restored hold.
    client, container = await make_app(
        reservation_ttl_seconds=2, sweep_interval_ms=60_000, reconcile_interval_seconds=3600
    )
    drop, held, token, bought_id = await bought_then_restored(
        client, container, owned_redis, tmp_path, wait_past_deadline=True
    )
    timer = keys.DropKeys(drop["id"]).timer(held["id"])
    # Its timer key expires on load: the expiry listener hears of it and must leave it alone.
    await wait_until(lambda: _gone(container, timer), within=5, what="timer expired")

    again = await purchase(client, held["id"], token)
    assert again.status_code == 200, again.text
    assert again.json()["id"] == bought_id
    assert await hold_state(container, held["id"]) == "PURCHASED"
    await assert_settled(client, container, drop, held)
    await sneakerdrop_check(stores, tmp_path / "data")


async def test_expiry_listener_leaves_a_restored_hold_to_postgres(
    make_app: AppFactory, owned_redis: OwnedValkey, stores: StoreUrls, tmp_path: Path
) -> None:
    # Only the expiry listener runs: no sweeper or reconciler pass comes by.
    client, container = await make_app(reservation_ttl_seconds=3, **NO_PASSES)
    drop, held, (buyer, prober) = await held_in_new_drop(client, container, 2, users_count=2)
    snapshot = owned_redis.snapshot(tmp_path / "snapshot")
    bought = await purchase(client, held["id"], buyer.access_token)
    assert bought.status_code == 201
    owned_redis.kill()
    await asyncio.to_thread(owned_redis.restart, restore_from=snapshot)
    await wait_until(lambda: _listening(container), within=10, what="listener resubscribed")

    # A hold taken after the restart expires after the restored one: once the listener
    # has released it, it has heard of the restored hold's expiry too, and let it be.
    # (Holds taken in the first seconds after a start count as reloaded: uptime is whole
    # seconds. The probe must not.)
    await wait_until(lambda: _up_for(container, 3), within=10, what="Redis up 3 s")
    probe = (await reserve(client, drop["id"], prober.access_token)).json()
    assert deadline_ms(probe) > deadline_ms(held)
    await wait_until(
        lambda: _expired(container, drop["id"], probe["id"]), within=10, what="probe expired"
    )
    assert await hold_state(container, held["id"]) == "ACTIVE"
    assert await container.drop_store.counters(drop["id"]) == (2, 1, 0, 1)

    again = await purchase(client, held["id"], buyer.access_token)
    assert again.status_code == 200, again.text
    assert again.json()["id"] == bought.json()["id"]
    assert await container.drop_store.counters(drop["id"]) == (2, 1, 1, 0)
    await assert_invariant(container, drop["id"])
    await sneakerdrop_check(stores, tmp_path / "data")


async def test_sweeper_probes_a_quiet_drop_again_once_redis_restarted_from_a_snapshot(
    make_app: AppFactory, owned_redis: OwnedValkey, stores: StoreUrls, tmp_path: Path
) -> None:
    # The app's own sweeper and reconciler stay out of the way; the one under test
    # would skip a drop it found empty for an hour.
    client, container = await make_app(reservation_ttl_seconds=2, **NO_PASSES)
    drop, held, (buyer,) = await held_in_new_drop(client, container, 1, users_count=1)
    snapshot = owned_redis.snapshot(tmp_path / "snapshot")
    cancelled = await client.delete(
        f"/api/reservations/{held['id']}", headers=auth(buyer.access_token)
    )
    assert cancelled.status_code == 204
    sweeper = Sweeper(container.hold_store, container.db, horizon_ms=3_600_000)
    assert await sweeper.sweep_pass([drop["id"]]) == 0
    # Empty: not probed again for half an hour.
    assert sweeper.next_probe_ms[drop["id"]] > deadline_ms(held) + 1_000_000

    owned_redis.kill()
    await asyncio.to_thread(owned_redis.restart, restore_from=snapshot)
    assert await hold_state(container, held["id"]) == "ACTIVE"  # back from the snapshot
    await wait_until(
        lambda: redis_time_reached(container, deadline_ms(held)), within=10, what="deadline"
    )

    # Long before its planned probe, but on another run of Redis: the drop is probed, and
    # the restored hold (PostgreSQL has no purchase of it) goes back to stock.
    assert await sweeper.sweep_pass([drop["id"]]) == 1
    assert await hold_state(container, held["id"]) == "EXPIRED"
    assert await container.drop_store.counters(drop["id"]) == (1, 1, 0, 0)
    await assert_invariant(container, drop["id"])


async def _up_for(container: Container, seconds: int) -> bool:
    info = await container.redis.info("server")
    return int(info["uptime_in_seconds"]) >= seconds


async def _listening(container: Container) -> bool:
    """The restarted server has an expiry-event subscriber again."""
    counts = await container.redis.pubsub_numsub("__keyevent@0__:expired")
    return bool(counts and counts[0][1] >= 1)


async def _expired(container: Container, drop_id: str, reservation_id: str) -> bool:
    counters = await container.drop_store.counters(drop_id)
    assert counters is not None
    assert counters[1] <= 1, f"the restored hold's unit went back to stock: {counters}"
    return await hold_state(container, reservation_id) == "EXPIRED"


async def _gone(container: Container, key: str) -> bool:
    return not await container.redis.exists(key)
