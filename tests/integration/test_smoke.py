"""The whole path once: sign up, create a drop, reserve, purchase, invariant."""

from __future__ import annotations

import httpx

from app.container import Container
from tests.support.factories import admin_token, assert_invariant, auth, create_drop, signup


async def test_reserve_then_purchase(client: httpx.AsyncClient, container: Container) -> None:
    admin = await admin_token(client, container)
    drop = await create_drop(client, admin, totalStock=2)
    user = await signup(client)
    held = await client.post(f"/api/drops/{drop['id']}/reserve", headers=auth(user["accessToken"]))
    assert held.status_code == 201, held.text
    bought = await client.post(
        f"/api/reservations/{held.json()['id']}/purchase", headers=auth(user["accessToken"])
    )
    assert bought.status_code == 201, bought.text
    view = (await client.get(f"/api/drops/{drop['id']}")).json()
    assert view["availableStock"] == 1
    assert view["activeReservations"] == 0
    assert view["recentBuyers"][0]["displayName"] == user["user"]["displayName"]
    await assert_invariant(container, drop["id"])
