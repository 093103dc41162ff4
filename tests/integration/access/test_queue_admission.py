"""A queue drop admits in position order at admitPerMinute; passes expire; a waiting
ticket reads `closed` while nothing can be bought and `waiting` again after a restock;
`ahead` and `estimatedWaitSeconds` as the contract defines them. Real stores, the app's
own access leader."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import httpx
import pytest

from app.container import Container
from tests.support.access import (
    bulk_users,
    eventually,
    fixed_record,
    parse_iso,
    queue_drop,
    queue_snapshot,
    wire_ticket,
)
from tests.support.factories import admin_token, assert_invariant, auth, signup


async def _join(client: httpx.AsyncClient, drop_id: str, token: str) -> httpx.Response:
    return await client.post(f"/api/drops/{drop_id}/queue", headers=auth(token))


async def _ticket(client: httpx.AsyncClient, drop_id: str, token: str) -> dict[str, Any]:
    response = await client.get(f"/api/drops/{drop_id}/queue/me", headers=auth(token))
    assert response.status_code == 200, response.text
    ticket: dict[str, Any] = response.json()
    return ticket


async def _reserve(client: httpx.AsyncClient, drop_id: str, token: str) -> httpx.Response:
    return await client.post(f"/api/drops/{drop_id}/reserve", json={}, headers=auth(token))


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_passes_are_granted_in_position_order_at_the_set_rate(
    client: httpx.AsyncClient, container: Container
) -> None:
    rate, window_s, pass_seconds = 600, 30, 120
    admin = await admin_token(client, container)
    drop = await queue_drop(
        client, admin, starts_in=2, admit_per_minute=rate, pass_seconds=pass_seconds
    )
    drop_id = drop["id"]
    users = await bulk_users(container, 2 * rate * window_s // 60)  # more than can be admitted
    for user in users:
        ticket, created = await container.access_service.join(user, drop_id)
        assert created
        assert ticket.position is None, "joined after the start: raise starts_in"
    starts_ms = int(parse_iso(drop["startsAt"]).timestamp() * 1000)
    await fixed_record(client, drop_id)

    async def window_over() -> bool:
        seconds, micros = await container.redis.time()
        return seconds * 1000 + micros // 1000 >= starts_ms + (window_s + 0.5) * 1000

    await eventually(window_over, window_s + 10, every=0.25)
    snap = await queue_snapshot(container, drop_id)
    assert len(snap.entry_ids) == len(users)
    served = snap.served
    # Every position up to the highest served was admitted, none after it.
    assert all(snap.admitted_ms[:served])
    assert not any(snap.admitted_ms[served:])
    # In position order: a later position was never admitted before an earlier one.
    moments = snap.admitted_ms[:served]
    assert moments == sorted(moments)
    assert moments[0] >= starts_ms
    in_window = sum(1 for m in moments if m < starts_ms + window_s * 1000)
    expected = rate * window_s // 60
    assert abs(in_window - expected) <= expected // 10, (
        f"{in_window} passes in {window_s} s at {rate}/min (expected {expected} +- 10 %)"
    )
    # Spread evenly: each 5 s of the window got its share, within 20 % (a tick is 0.25 s,
    # and the first one after the start comes late by up to that and a start-up).
    share = rate * 5 // 60
    buckets = [
        sum(1 for m in moments if starts_ms + b * 5000 <= m < starts_ms + (b + 1) * 5000)
        for b in range(window_s // 5)
    ]
    assert all(abs(n - share) <= share // 5 for n in buckets), buckets
    for user in users[:50]:
        wire = await wire_ticket(container, drop_id, user)
        if wire["status"] == "admitted":
            started = parse_iso(wire["admittedAt"])
            assert parse_iso(wire["passExpiresAt"]) - started == timedelta(seconds=pass_seconds)
            assert wire["ahead"] == 0
        else:
            assert wire["status"] == "waiting"
            assert wire["passExpiresAt"] is None
            ahead = wire["ahead"]
            assert ahead >= 0
            assert wire["estimatedWaitSeconds"] == math.ceil(ahead * 60 / rate)
    state = (await client.get(f"/api/drops/{drop_id}/queue")).json()
    assert state["servingPosition"] >= served
    assert state["admitPerMinute"] == rate
    print(f"admission: {in_window} passes in the first {window_s} s at {rate}/min, {buckets}")


async def test_an_expired_pass_refuses_reserve_again_while_a_hold_taken_in_time_lives_on(
    client: httpx.AsyncClient, container: Container
) -> None:
    admin = await admin_token(client, container)
    drop = await queue_drop(client, admin, starts_in=1, admit_per_minute=6000, pass_seconds=1)
    drop_id = drop["id"]
    user = await signup(client)
    token = user["accessToken"]
    first = await _join(client, drop_id, token)
    assert first.status_code == 201, first.text
    refused = await _reserve(client, drop_id, token)
    assert refused.status_code == 403
    assert refused.json()["code"] == "NOT_ADMITTED"

    async def admitted() -> Any:
        ticket = await _ticket(client, drop_id, token)
        return ticket if ticket["status"] == "admitted" else None

    ticket = await eventually(admitted)
    assert ticket["entryId"] == first.json()["entryId"]
    assert ticket["position"] == 1
    assert ticket["ahead"] == 0
    assert ticket["estimatedWaitSeconds"] == 0
    admitted_at = parse_iso(ticket["admittedAt"])
    assert parse_iso(ticket["passExpiresAt"]) - admitted_at == timedelta(seconds=1)
    held = await _reserve(client, drop_id, token)
    assert held.status_code == 201, held.text
    hold = held.json()

    async def expired() -> Any:
        ticket = await _ticket(client, drop_id, token)
        return ticket if ticket["status"] == "expired" else None

    gone = await eventually(expired)
    assert gone["admittedAt"] == ticket["admittedAt"]
    assert gone["passExpiresAt"] == ticket["passExpiresAt"]
    again = await _reserve(client, drop_id, token)
    assert again.status_code == 403, again.text
    assert again.json()["code"] == "NOT_ADMITTED"
    live = (await client.get("/api/me/reservations", headers=auth(token))).json()
    assert [(h["id"], h["status"], h["expiresAt"]) for h in live] == [
        (hold["id"], "ACTIVE", hold["expiresAt"])
    ]
    rejoined = await _join(client, drop_id, token)
    assert rejoined.status_code == 200, rejoined.text
    assert rejoined.json() == gone
    bought = await client.post(f"/api/reservations/{hold['id']}/purchase", headers=auth(token))
    assert bought.status_code == 201, bought.text
    await assert_invariant(container, drop_id)


async def test_a_waiting_ticket_is_closed_while_sold_out_and_waits_in_its_place_after_a_restock(
    client: httpx.AsyncClient, container: Container
) -> None:
    admin = await admin_token(client, container)
    drop = await queue_drop(client, admin, starts_in=1, admit_per_minute=60, totalStock=1)
    drop_id = drop["id"]
    users = [await signup(client) for _ in range(8)]
    for user in users:
        assert (await _join(client, drop_id, user["accessToken"])).status_code == 201
    await fixed_record(client, drop_id)
    tickets = [await _ticket(client, drop_id, u["accessToken"]) for u in users]
    by_position = {t["position"]: u["accessToken"] for t, u in zip(tickets, users, strict=True)}
    first, last = by_position[1], by_position[len(users)]

    async def first_admitted() -> bool:
        ticket = await _ticket(client, drop_id, first)
        return bool(ticket["status"] == "admitted")

    await eventually(first_admitted)
    hold = await _reserve(client, drop_id, first)
    assert hold.status_code == 201, hold.text
    bought = await client.post(
        f"/api/reservations/{hold.json()['id']}/purchase", headers=auth(first)
    )
    assert bought.status_code == 201, bought.text
    assert (await client.get(f"/api/drops/{drop_id}")).json()["status"] == "sold_out"

    async def reads(status: str) -> Any:
        ticket = await _ticket(client, drop_id, last)
        return ticket if ticket["status"] == status else None

    closed = await eventually(lambda: reads("closed"), 3)
    assert closed["position"] == len(users)
    assert closed["admittedAt"] is None
    # Nothing is admitted while nothing can be bought.
    served = (await client.get(f"/api/drops/{drop_id}/queue")).json()["servingPosition"]
    restocked = await client.post(
        f"/api/drops/{drop_id}/restock", json={"quantity": 1}, headers=auth(admin)
    )
    assert restocked.status_code == 200, restocked.text
    waiting = await eventually(lambda: reads("waiting"), 3)
    assert waiting["position"] == len(users)
    assert waiting["entryId"] == closed["entryId"]
    assert waiting["ahead"] is not None
    assert waiting["ahead"] <= len(users) - 1 - served
    cancelled = await client.patch(
        f"/api/drops/{drop_id}", json={"status": "cancelled"}, headers=auth(admin)
    )
    assert cancelled.status_code == 200, cancelled.text
    gone = await eventually(lambda: reads("closed"), 3)
    assert gone["position"] == len(users)
    refused = await _join(client, drop_id, (await signup(client))["accessToken"])
    assert refused.status_code == 409
    assert refused.json()["code"] == "DROP_NOT_LIVE"
    again = await _join(client, drop_id, last)
    assert again.status_code == 200, again.text
    assert again.json()["status"] == "closed"
    await assert_invariant(container, drop_id)


async def test_ahead_and_the_wait_estimate_and_late_joiners_behind_the_pre_queue(
    client: httpx.AsyncClient, container: Container
) -> None:
    rate = 7  # the first pass is due 60/7 s after the start: nobody is admitted meanwhile
    admin = await admin_token(client, container)
    drop = await queue_drop(client, admin, starts_in=1, admit_per_minute=rate, pass_seconds=45)
    drop_id = drop["id"]
    early = [await signup(client) for _ in range(5)]
    for user in early:
        joined = await _join(client, drop_id, user["accessToken"])
        assert joined.json()["position"] is None
    record = await fixed_record(client, drop_id)
    assert record["entries"] == len(early)
    late = [await signup(client) for _ in range(2)]
    for n, user in enumerate(late, len(early) + 1):
        joined = await _join(client, drop_id, user["accessToken"])
        assert joined.status_code == 201, joined.text
        assert joined.json()["position"] == n
    positions = []
    for user in early + late:
        ticket = await _ticket(client, drop_id, user["accessToken"])
        assert ticket["status"] == "waiting"
        assert ticket["ahead"] == ticket["position"] - 1
        assert ticket["estimatedWaitSeconds"] == math.ceil(ticket["ahead"] * 60 / rate)
        assert ticket["admittedAt"] is None
        positions.append(ticket["position"])
    assert sorted(positions) == list(range(1, 8))
    listed = (await client.get(f"/api/drops/{drop_id}/fairness/entries")).json()
    assert len(listed) == len(early)  # later joiners are not in the record
    state = (await client.get(f"/api/drops/{drop_id}/queue")).json()
    assert state == {
        "dropId": drop_id,
        "waiting": 7,
        "admitted": 0,
        "servingPosition": 0,
        "admitPerMinute": rate,
        "passSeconds": 45,
    }
