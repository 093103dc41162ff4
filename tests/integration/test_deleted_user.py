"""An account whose row is gone gets 401 UNAUTHORIZED, never a 5xx.

Its access token is still validly signed, so only a route that reads the account finds
out: `/me`, the admin routes and purchase (the insert's foreign key). Those answer 401
and sign the presenting session out, so the reserve paths, which never ask PostgreSQL,
refuse that session from then on through the sign-out marker they already check.
"""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import text

from app.container import Container
from app.store import keys
from tests.support.factories import admin_token, assert_invariant, auth, create_drop, signup


async def delete_user(container: Container, user_id: str) -> None:
    async with container.db.begin() as session:
        await session.execute(text("DELETE FROM users WHERE id = :id"), {"id": user_id})


def assert_401(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "UNAUTHORIZED"


async def hold_state(container: Container, reservation_id: str) -> str:
    ref = keys.parse_hold_id(reservation_id)
    assert ref is not None
    raw = await container.redis.hget(keys.DropKeys(ref.drop_id).holds, reservation_id)
    return str(raw).split("|", 1)[0]


async def test_a_deleted_customer_gets_401_on_purchase_me_and_then_reserve(
    client: httpx.AsyncClient, container: Container
) -> None:
    admin = await admin_token(client, container)
    drop = await create_drop(client, admin, totalStock=3, perUserLimit=3)
    session: dict[str, Any] = await signup(client)
    user = auth(session["accessToken"])
    held = await client.post(f"/api/drops/{drop['id']}/reserve", headers=user)
    assert held.status_code == 201, held.text
    hold = held.json()["id"]

    await delete_user(container, session["user"]["id"])

    # Purchase: the foreign key refuses the row; the claim is undone, not left to the sweeper.
    for url in (f"/api/reservations/{hold}/purchase", f"/api/drops/{hold}/purchase"):
        assert_401(await client.post(url, headers=user))
        assert_401(await client.post(url, headers={**user, "Idempotency-Key": "buy"}))
    assert await hold_state(container, hold) == "ACTIVE"
    await assert_invariant(container, drop["id"])

    # Reserve never asks PostgreSQL: until a route that does has seen the account is
    # gone, it may still hold a unit (which can never be bought), but never 5xx.
    early = await client.post(f"/api/drops/{drop['id']}/reserve", headers=user)
    assert early.status_code in (201, 401), early.text

    assert_401(await client.get("/api/auth/me", headers=user))
    # /me signed the session out: both reserve entry points refuse it now.
    assert_401(await client.post(f"/api/drops/{drop['id']}/reserve", headers=user))
    keyed = {**user, "Idempotency-Key": "after"}
    assert_401(await client.post(f"/api/drops/{drop['id']}/reserve", headers=keyed))
    assert_401(await client.get("/api/me/reservations", headers=user))
    assert_401(await client.get("/api/me/purchases", headers=user))
    assert_401(await client.delete(f"/api/reservations/{hold}", headers=user))
    refreshed = await client.post(
        "/api/auth/refresh", json={"refreshToken": session["refreshToken"]}
    )
    assert refreshed.status_code == 401, refreshed.text
    await assert_invariant(container, drop["id"])


async def test_a_deleted_admin_gets_401_on_every_admin_route(
    client: httpx.AsyncClient, container: Container
) -> None:
    admin = await admin_token(client, container)
    drop = await create_drop(client, admin)
    me = (await client.get("/api/auth/me", headers=auth(admin))).json()

    await delete_user(container, me["id"])

    headers = auth(admin)
    body = {"name": "Ghost", "priceCents": 100, "totalStock": 1}
    assert_401(await client.post("/api/drops", json=body, headers=headers))
    keyed = {**headers, "Idempotency-Key": "ghost"}
    assert_401(await client.post("/api/drops", json=body, headers=keyed))
    assert_401(await client.patch(f"/api/drops/{drop['id']}", json={"name": "x"}, headers=headers))
    restock = f"/api/drops/{drop['id']}/restock"
    assert_401(await client.post(restock, json={"quantity": 1}, headers=headers))
    listed = await client.get("/api/drops", params={"status": "all"})
    assert [(d["name"], d["totalStock"]) for d in listed.json()] == [("Test Runner", 10)]


async def test_a_demoted_admin_is_refused_at_once(
    client: httpx.AsyncClient, container: Container
) -> None:
    """The role is read from the account, not from a token issued before the change."""
    admin = await admin_token(client, container)
    me = (await client.get("/api/auth/me", headers=auth(admin))).json()
    async with container.db.begin() as session:
        await session.execute(
            text("UPDATE users SET role = 'customer' WHERE id = :id"), {"id": me["id"]}
        )
    body = {"name": "Nope", "priceCents": 100, "totalStock": 1}
    response = await client.post("/api/drops", json=body, headers=auth(admin))
    assert response.status_code == 403, response.text
    assert response.json()["code"] == "FORBIDDEN"
