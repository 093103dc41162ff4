"""No oversell, per-user limits and exactly-once purchase under real concurrency."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
from sqlalchemy import func, select

from app.container import Container
from app.db.models import Purchase
from tests.integration.engine.helpers import purchase, reserve, users
from tests.support.factories import admin_token, assert_invariant, create_drop


async def test_300_users_race_for_50_units(client: httpx.AsyncClient, container: Container) -> None:
    admin = await admin_token(client, container)
    drop = await create_drop(client, admin, totalStock=50)
    crowd = await users(container, 300)

    responses = await asyncio.gather(*(reserve(client, drop["id"], s.access_token) for s in crowd))

    codes = Counter(r.status_code if r.status_code == 201 else r.json()["code"] for r in responses)
    assert codes == {201: 50, "SOLD_OUT": 250}
    view = (await client.get(f"/api/drops/{drop['id']}")).json()
    assert view["availableStock"] == 0
    assert view["activeReservations"] == 50
    await assert_invariant(container, drop["id"])


async def test_one_user_twenty_parallel_reserves_gets_one_hold(
    client: httpx.AsyncClient, container: Container
) -> None:
    admin = await admin_token(client, container)
    drop = await create_drop(client, admin, totalStock=10, perUserLimit=1)
    (user,) = await users(container, 1)

    responses = await asyncio.gather(
        *(reserve(client, drop["id"], user.access_token) for _ in range(20))
    )

    codes = Counter(r.status_code if r.status_code == 201 else r.json()["code"] for r in responses)
    assert codes == {201: 1, "LIMIT_REACHED": 19}
    assert (await client.get(f"/api/drops/{drop['id']}")).json()["availableStock"] == 9
    await assert_invariant(container, drop["id"])


async def test_limit_counts_purchases_too(client: httpx.AsyncClient, container: Container) -> None:
    admin = await admin_token(client, container)
    drop = await create_drop(client, admin, totalStock=10, perUserLimit=2)
    (user,) = await users(container, 1)
    first = await reserve(client, drop["id"], user.access_token)
    assert (await purchase(client, first.json()["id"], user.access_token)).status_code == 201
    assert (await reserve(client, drop["id"], user.access_token)).status_code == 201
    third = await reserve(client, drop["id"], user.access_token)
    assert third.status_code == 409
    assert third.json()["code"] == "LIMIT_REACHED"
    await assert_invariant(container, drop["id"])


async def test_one_hold_purchased_ten_times_at_once(
    client: httpx.AsyncClient, container: Container
) -> None:
    admin = await admin_token(client, container)
    drop = await create_drop(client, admin, totalStock=3)
    (user,) = await users(container, 1)
    held = (await reserve(client, drop["id"], user.access_token)).json()

    responses = await asyncio.gather(
        *(purchase(client, held["id"], user.access_token) for _ in range(10))
    )

    statuses = Counter(r.status_code for r in responses)
    assert statuses == {201: 1, 200: 9}
    assert len({r.json()["id"] for r in responses}) == 1
    async with container.db.begin() as session:
        rows = await session.scalar(
            select(func.count()).select_from(Purchase).where(Purchase.reservation_id == held["id"])
        )
    assert rows == 1
    view = (await client.get(f"/api/drops/{drop['id']}")).json()
    assert (view["availableStock"], view["activeReservations"]) == (2, 0)
    await assert_invariant(container, drop["id"])


async def test_both_purchase_routes_return_the_same_purchase(
    client: httpx.AsyncClient, container: Container
) -> None:
    admin = await admin_token(client, container)
    drop = await create_drop(client, admin, totalStock=1)
    (user,) = await users(container, 1)
    held = (await reserve(client, drop["id"], user.access_token)).json()
    legacy = await client.post(
        f"/api/drops/{held['id']}/purchase",
        headers={"Authorization": f"Bearer {user.access_token}"},
    )
    assert legacy.status_code == 201
    again = await purchase(client, held["id"], user.access_token)
    assert again.status_code == 200
    assert again.json() == legacy.json()
    assert (await client.get(f"/api/drops/{drop['id']}")).json()["status"] == "sold_out"
    await assert_invariant(container, drop["id"])


async def test_mixed_storm_keeps_the_invariant(
    client: httpx.AsyncClient, container: Container
) -> None:
    """Reserve, purchase some, cancel some, all at once, over two drops."""
    admin = await admin_token(client, container)
    drops = [await create_drop(client, admin, totalStock=30, perUserLimit=2) for _ in range(2)]
    crowd = await users(container, 60)

    async def shopper(index: int) -> None:
        token = crowd[index].access_token
        drop_id = drops[index % 2]["id"]
        held = await reserve(client, drop_id, token)
        if held.status_code != 201:
            return
        rid = held.json()["id"]
        if index % 3 == 0:
            await client.delete(
                f"/api/reservations/{rid}", headers={"Authorization": f"Bearer {token}"}
            )
        elif index % 3 == 1:
            await purchase(client, rid, token)

    await asyncio.gather(*(shopper(i) for i in range(60)))
    for drop in drops:
        await assert_invariant(container, drop["id"])
