"""Drop views for anyone: listing and its filters, one drop, status derivation, buyers."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from app.container import Container
from tests.support.factories import (
    admin_token,
    assert_invariant,
    auth,
    create_drop,
    in_future,
    signup,
)


def assert_problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code
    assert response.json()["status"] == status


async def ids(client: httpx.AsyncClient, status: str | None = None) -> list[str]:
    params = {"status": status} if status is not None else {}
    response = await client.get("/api/drops", params=params)
    assert response.status_code == 200, response.text
    return [drop["id"] for drop in response.json()]


async def reserve(client: httpx.AsyncClient, token: str, drop_id: str) -> str:
    response = await client.post(f"/api/drops/{drop_id}/reserve", headers=auth(token))
    assert response.status_code == 201, response.text
    reservation_id: str = response.json()["id"]
    return reservation_id


async def buy(client: httpx.AsyncClient, token: str, drop_id: str) -> None:
    reservation_id = await reserve(client, token, drop_id)
    response = await client.post(
        f"/api/reservations/{reservation_id}/purchase", headers=auth(token)
    )
    assert response.status_code == 201, response.text


async def view(client: httpx.AsyncClient, drop_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/drops/{drop_id}")
    assert response.status_code == 200, response.text
    drop: dict[str, Any] = response.json()
    return drop


async def one_of_each(client: httpx.AsyncClient, admin: str) -> dict[str, str]:
    """A drop in every status; returns status -> drop id."""
    now = datetime.now(UTC)
    ended = await create_drop(
        client, admin, startsAt=now - timedelta(hours=2), endsAt=now - timedelta(hours=1)
    )
    scheduled = await create_drop(client, admin, startsAt=in_future(3600))
    live = await create_drop(client, admin, startsAt=now - timedelta(minutes=30))
    sold_out = await create_drop(client, admin, totalStock=0, startsAt=now - timedelta(minutes=20))
    cancelled = await create_drop(client, admin, startsAt=now - timedelta(minutes=10))
    response = await client.patch(
        f"/api/drops/{cancelled['id']}", json={"status": "cancelled"}, headers=auth(admin)
    )
    assert response.status_code == 200, response.text
    made = {
        "ended": ended["id"],
        "scheduled": scheduled["id"],
        "live": live["id"],
        "sold_out": sold_out["id"],
        "cancelled": cancelled["id"],
    }
    for status, drop_id in made.items():
        assert (await view(client, drop_id))["status"] == status
    return made


async def test_default_list_is_the_storefront(
    client: httpx.AsyncClient, container: Container
) -> None:
    admin = await admin_token(client, container)
    made = await one_of_each(client, admin)
    # ordered by startsAt: live (-30 min), sold_out (-20 min), scheduled (+1 h)
    assert await ids(client) == [made["live"], made["sold_out"], made["scheduled"]]


@pytest.mark.parametrize("status", ["scheduled", "live", "sold_out", "ended", "cancelled"])
async def test_status_filter(client: httpx.AsyncClient, container: Container, status: str) -> None:
    admin = await admin_token(client, container)
    made = await one_of_each(client, admin)
    assert await ids(client, status) == [made[status]]


async def test_status_all_lists_every_drop_by_starts_at(
    client: httpx.AsyncClient, container: Container
) -> None:
    admin = await admin_token(client, container)
    made = await one_of_each(client, admin)
    order = ["ended", "live", "sold_out", "cancelled", "scheduled"]
    assert await ids(client, "all") == [made[s] for s in order]


@pytest.mark.parametrize("bogus", ["bogus", "LIVE", "", "live,scheduled"])
async def test_unknown_status_filter_is_422(client: httpx.AsyncClient, bogus: str) -> None:
    response = await client.get("/api/drops", params={"status": bogus})
    assert_problem(response, 422, "VALIDATION_ERROR")


async def test_list_is_ordered_by_starts_at(
    client: httpx.AsyncClient, container: Container
) -> None:
    admin = await admin_token(client, container)
    late = await create_drop(client, admin, name="late", startsAt=in_future(300))
    early = await create_drop(client, admin, name="early", startsAt=in_future(100))
    middle = await create_drop(client, admin, name="middle", startsAt=in_future(200))
    assert await ids(client) == [early["id"], middle["id"], late["id"]]
    moved = await client.patch(
        f"/api/drops/{late['id']}",
        json={"startsAt": in_future(50).isoformat().replace("+00:00", "Z")},
        headers=auth(admin),
    )
    assert moved.status_code == 200, moved.text
    assert await ids(client) == [late["id"], early["id"], middle["id"]]


async def test_get_one_drop(client: httpx.AsyncClient, container: Container) -> None:
    admin = await admin_token(client, container)
    drop = await create_drop(client, admin, name="One", totalStock=3)
    assert await view(client, drop["id"]) == drop
    listed = (await client.get("/api/drops")).json()
    assert listed == [drop]


@pytest.mark.parametrize(
    "drop_id",
    [
        "0123456789abcdef",  # well formed, unknown
        "abc",
        "x" * 1000,
        "0123456789ABCDEF",
        "%2E%2E",
        "%00",
        "%20",
        "drop%0Aid",
        "%F0%9F%91%9F",
        "0123456789abcdef.0123456789abcdef.0123456789abcdef",
    ],
)
async def test_unknown_or_malformed_drop_id_is_404(
    client: httpx.AsyncClient, container: Container, drop_id: str
) -> None:
    admin = await admin_token(client, container)
    await create_drop(client, admin)
    assert_problem(await client.get(f"/api/drops/{drop_id}"), 404, "DROP_NOT_FOUND")


async def test_id_with_an_encoded_slash_is_404(client: httpx.AsyncClient) -> None:
    # The router decodes %2F before matching, so "..%2Fx" is no drop route at all:
    # a plain 404 NOT_FOUND problem (never a 500, never a path escape).
    for path in ("/api/drops/..%2Fx", "/api/drops/a%2Fb"):
        assert_problem(await client.get(path), 404, "NOT_FOUND")


async def test_held_stays_live_then_purchase_is_sold_out(
    client: httpx.AsyncClient, container: Container
) -> None:
    admin = await admin_token(client, container)
    drop = await create_drop(client, admin, totalStock=1)
    user = await signup(client)
    reservation_id = await reserve(client, user["accessToken"], drop["id"])
    held = await view(client, drop["id"])
    assert (held["status"], held["availableStock"], held["activeReservations"]) == ("live", 0, 1)
    await assert_invariant(container, drop["id"])
    bought = await client.post(
        f"/api/reservations/{reservation_id}/purchase", headers=auth(user["accessToken"])
    )
    assert bought.status_code == 201, bought.text
    sold = await view(client, drop["id"])
    assert (sold["status"], sold["availableStock"], sold["activeReservations"]) == (
        "sold_out",
        0,
        0,
    )
    assert await ids(client, "sold_out") == [drop["id"]]
    await assert_invariant(container, drop["id"])


async def test_scheduled_drop_turns_ended_after_ends_at(
    client: httpx.AsyncClient, container: Container
) -> None:
    admin = await admin_token(client, container)
    now = datetime.now(UTC)
    drop = await create_drop(
        client, admin, startsAt=now - timedelta(seconds=2), endsAt=now + timedelta(seconds=1)
    )
    assert drop["status"] == "live"
    deadline = time.monotonic() + 10
    status = drop["status"]
    while status != "ended" and time.monotonic() < deadline:
        await asyncio.sleep(0.05)  # polling a clock-derived status: there is no event for it
        status = (await view(client, drop["id"]))["status"]
    assert status == "ended"
    assert datetime.now(UTC) >= now + timedelta(seconds=1)
    assert await ids(client) == []
    assert await ids(client, "ended") == [drop["id"]]


async def test_active_reservations_counts_live_holds(
    client: httpx.AsyncClient, container: Container
) -> None:
    admin = await admin_token(client, container)
    drop = await create_drop(client, admin, totalStock=5)
    users = [await signup(client) for _ in range(3)]
    holds = [await reserve(client, u["accessToken"], drop["id"]) for u in users]
    seen = await view(client, drop["id"])
    assert (seen["availableStock"], seen["activeReservations"]) == (2, 3)
    gone = await client.delete(
        f"/api/reservations/{holds[0]}", headers=auth(users[0]["accessToken"])
    )
    assert gone.status_code == 204
    bought = await client.post(
        f"/api/reservations/{holds[1]}/purchase", headers=auth(users[1]["accessToken"])
    )
    assert bought.status_code == 201, bought.text
    seen = await view(client, drop["id"])
    assert (seen["availableStock"], seen["activeReservations"]) == (3, 1)
    await assert_invariant(container, drop["id"])


async def test_recent_buyers_are_the_last_five_newest_first(
    client: httpx.AsyncClient, container: Container
) -> None:
    admin = await admin_token(client, container)
    drop = await create_drop(client, admin, totalStock=10)
    for i in range(1, 7):
        buyer = await signup(client, email=f"buyer{i}@example.com", displayName=f"Buyer {i}")
        await buy(client, buyer["accessToken"], drop["id"])
    seen = await view(client, drop["id"])
    buyers = seen["recentBuyers"]
    assert [b["displayName"] for b in buyers] == [f"Buyer {i}" for i in (6, 5, 4, 3, 2)]
    for entry in buyers:
        assert set(entry) == {"displayName", "purchasedAt"}
        assert entry["purchasedAt"].endswith("Z")
    moments = [datetime.fromisoformat(b["purchasedAt"].replace("Z", "+00:00")) for b in buyers]
    assert moments == sorted(moments, reverse=True)
    assert "@" not in str(buyers)
    assert (seen["availableStock"], seen["activeReservations"]) == (4, 0)
    await assert_invariant(container, drop["id"])
