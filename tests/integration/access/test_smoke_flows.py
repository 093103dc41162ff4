"""Queue and draw end to end through the API, on real stores: the happy paths."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from app.container import Container
from app.verify_order import problems
from tests.support.factories import admin_token, assert_invariant, auth, create_drop, signup


async def eventually(check: Callable[[], Awaitable[Any]], seconds: float = 10) -> Any:
    """Poll `check` until it returns something truthy, or fail after `seconds`."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        found = await check()
        if found:
            return found
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


async def test_a_queue_orders_the_pre_queue_admits_and_lets_the_admitted_reserve(
    client: httpx.AsyncClient, container: Container
) -> None:
    admin = await admin_token(client, container)
    starts = datetime.now(UTC) + timedelta(seconds=1.5)
    drop = await create_drop(
        client,
        admin,
        totalStock=5,
        startsAt=iso(starts),
        access="queue",
        queue={"admitPerMinute": 60, "passSeconds": 30},
    )
    assert drop["access"] == "queue"
    assert drop["queue"] == {"admitPerMinute": 60, "passSeconds": 30}
    users = [await signup(client) for _ in range(4)]
    tickets = []
    for user in users:
        response = await client.post(
            f"/api/drops/{drop['id']}/queue", headers=auth(user["accessToken"])
        )
        assert response.status_code == 201, response.text
        tickets.append(response.json())
        assert response.json()["status"] == "waiting"
        assert response.json()["position"] is None
    again = await client.post(
        f"/api/drops/{drop['id']}/queue", headers=auth(users[0]["accessToken"])
    )
    assert again.status_code == 200
    assert again.json()["entryId"] == tickets[0]["entryId"]
    refused = await client.post(
        f"/api/drops/{drop['id']}/reserve", headers=auth(users[0]["accessToken"])
    )
    assert refused.status_code == 403
    assert refused.json()["code"] == "NOT_ADMITTED"
    fairness = (await client.get(f"/api/drops/{drop['id']}/fairness")).json()
    assert fairness["seed"] is None

    async def fixed() -> Any:
        record = (await client.get(f"/api/drops/{drop['id']}/fairness")).json()
        return record if record["seed"] else None

    record = await eventually(fixed)
    entries = (await client.get(f"/api/drops/{drop['id']}/fairness/entries")).json()
    assert problems(record, entries, drop["id"]) == []
    assert sorted(e["entryId"] for e in entries) == sorted(t["entryId"] for t in tickets)

    first = next(e["entryId"] for e in entries if e["position"] == 1)
    owner = users[[t["entryId"] for t in tickets].index(first)]

    async def admitted() -> Any:
        response = await client.get(
            f"/api/drops/{drop['id']}/queue/me", headers=auth(owner["accessToken"])
        )
        return response.json() if response.json()["status"] == "admitted" else None

    ticket = await eventually(admitted)
    assert ticket["position"] == 1
    assert ticket["ahead"] == 0
    held = await client.post(f"/api/drops/{drop['id']}/reserve", headers=auth(owner["accessToken"]))
    assert held.status_code == 201, held.text
    late = await signup(client)
    joined = await client.post(f"/api/drops/{drop['id']}/queue", headers=auth(late["accessToken"]))
    assert joined.json()["position"] == 5
    state = (await client.get(f"/api/drops/{drop['id']}/queue")).json()
    assert state["waiting"] + state["admitted"] == 5
    await assert_invariant(container, drop["id"])


async def test_a_draw_gives_holds_in_order_and_hands_a_cancelled_one_over(
    client: httpx.AsyncClient, container: Container
) -> None:
    admin = await admin_token(client, container)
    now = datetime.now(UTC)
    drop = await create_drop(
        client,
        admin,
        totalStock=2,
        sizes=[{"size": "US 9", "totalStock": 1}, {"size": "US 10", "totalStock": 1}],
        startsAt=iso(now - timedelta(seconds=1)),
        access="draw",
        draw={"closesAt": iso(now + timedelta(seconds=1.5)), "claimSeconds": 60},
    )
    users = [await signup(client) for _ in range(4)]
    for user in users:
        response = await client.post(
            f"/api/drops/{drop['id']}/entries",
            json={"size": "US 9", "fallbackSizes": ["US 10"]},
            headers=auth(user["accessToken"]),
        )
        assert response.status_code == 201, response.text
        assert response.json()["status"] == "entered"

    async def drawn() -> Any:
        record = (await client.get(f"/api/drops/{drop['id']}/fairness")).json()
        return record if record["seed"] else None

    record = await eventually(drawn)
    entries = (await client.get(f"/api/drops/{drop['id']}/fairness/entries")).json()
    assert problems(record, entries, drop["id"]) == []
    by_entry = {}
    for user in users:
        mine = await client.get(
            f"/api/drops/{drop['id']}/entries/me", headers=auth(user["accessToken"])
        )
        by_entry[mine.json()["entryId"]] = (user, mine.json())
    ordered = [by_entry[e["entryId"]] for e in entries]
    assert [entry["status"] for _, entry in ordered] == ["won", "won", "standby", "standby"]
    first_user, first_entry = ordered[0]
    cancelled = await client.delete(
        f"/api/reservations/{first_entry['reservationId']}",
        headers=auth(first_user["accessToken"]),
    )
    assert cancelled.status_code in (200, 204), cancelled.text
    third_user, _ = ordered[2]

    async def handed_over() -> Any:
        mine = await client.get(
            f"/api/drops/{drop['id']}/entries/me", headers=auth(third_user["accessToken"])
        )
        return mine.json() if mine.json()["status"] == "won" else None

    won = await eventually(handed_over)
    assert won["reservationId"]
    await assert_invariant(container, drop["id"])
