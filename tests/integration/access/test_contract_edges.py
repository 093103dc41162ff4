"""Fair access at the edges of the contract: create bodies, the wrong kind of drop, the
entry window, sizes, what is missing, and what the fairness record shows when."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from app.container import Container
from tests.support.access import (
    draw_drop,
    eventually,
    fixed_record,
    from_now,
    iso,
    queue_drop,
)
from tests.support.factories import admin_token, auth, create_drop, signup

SIZES = [{"size": "US 9", "totalStock": 2}, {"size": "US 10", "totalStock": 2}]


def _problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code, response.text


async def test_create_bodies_with_the_wrong_access_settings_are_422(
    client: httpx.AsyncClient, container: Container
) -> None:
    admin = await admin_token(client, container)
    now = datetime.now(UTC)
    start, close, end = (
        now + timedelta(minutes=1),
        now + timedelta(minutes=2),
        now + timedelta(minutes=3),
    )
    draw = {"closesAt": iso(close)}
    queue = {"admitPerMinute": 600}
    base: dict[str, Any] = {"name": "Edge", "priceCents": 100, "totalStock": 5}
    bad: list[dict[str, Any]] = [
        {"queue": queue},  # queue settings on an open drop
        {"draw": draw},
        {"access": "open", "queue": queue},
        {"access": "queue", "draw": draw},
        {"access": "draw", "draw": draw, "queue": queue},
        {"access": "draw"},  # no closesAt
        {"access": "draw", "draw": {"claimSeconds": 60}},
        {"access": "draw", "startsAt": iso(start), "draw": {"closesAt": iso(start)}},
        {
            "access": "draw",
            "startsAt": iso(start),
            "draw": {"closesAt": iso(start - timedelta(seconds=1))},
        },
        {"access": "draw", "startsAt": iso(start), "endsAt": iso(close), "draw": draw},
        {
            "access": "draw",
            "startsAt": iso(start),
            "endsAt": iso(end),
            "draw": {"closesAt": iso(end + timedelta(seconds=1))},
        },
        {"access": "queue", "queue": {"admitPerMinute": 0}},
        {"access": "queue", "queue": {"admitPerMinute": 100_001}},
        {"access": "queue", "queue": {"admitPerMinute": "600"}},
        {"access": "queue", "queue": {"passSeconds": 0}},
        {"access": "queue", "queue": {"passSeconds": 86_401}},
        {"access": "queue", "queue": {"admitPerMinute": 600, "extra": 1}},
        {"access": "draw", "draw": {**draw, "claimSeconds": 0}},
        {"access": "draw", "draw": {**draw, "claimSeconds": 86_401}},
        {"access": "raffle"},
    ]
    for fields in bad:
        response = await client.post("/api/drops", json={**base, **fields}, headers=auth(admin))
        _problem(response, 422, "VALIDATION_ERROR")

    edges: list[tuple[dict[str, Any], dict[str, Any]]] = [
        ({"access": "queue"}, {"queue": {"admitPerMinute": 600, "passSeconds": 300}}),
        (
            {"access": "queue", "queue": {"admitPerMinute": 100_000, "passSeconds": 86_400}},
            {"queue": {"admitPerMinute": 100_000, "passSeconds": 86_400}},
        ),
        (
            {"access": "queue", "queue": {"admitPerMinute": 1, "passSeconds": 1}},
            {"queue": {"admitPerMinute": 1, "passSeconds": 1}, "draw": None},
        ),
        (
            {"access": "draw", "startsAt": iso(start), "endsAt": iso(end), "draw": draw},
            {"draw": {"closesAt": iso(close).replace("+00:00", "Z"), "claimSeconds": 600}},
        ),
        ({"access": "draw", "draw": {**draw, "claimSeconds": 86_400}}, {"queue": None}),
        ({}, {"access": "open", "queue": None, "draw": None}),
    ]
    for fields, shown in edges:
        response = await client.post("/api/drops", json={**base, **fields}, headers=auth(admin))
        assert response.status_code == 201, (fields, response.text)
        drop = response.json()
        for key, value in shown.items():
            if key == "draw" and value is not None:
                assert drop["draw"]["claimSeconds"] == value["claimSeconds"]
                shown_close = _moment(drop["draw"]["closesAt"])
                assert abs(shown_close - _moment(value["closesAt"])) < timedelta(milliseconds=1)
            else:
                assert drop[key] == value, (key, drop)


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def test_joining_the_wrong_kind_of_drop_or_one_that_is_over(
    client: httpx.AsyncClient, container: Container
) -> None:
    admin = await admin_token(client, container)
    user = await signup(client)
    token = user["accessToken"]
    ending = await queue_drop(client, admin, starts_in=-5, endsAt=iso(from_now(1)))
    opened = await create_drop(client, admin)
    drawn = await draw_drop(client, admin, closes_in=60)
    for other in (opened, drawn):
        response = await client.post(f"/api/drops/{other['id']}/queue", headers=auth(token))
        _problem(response, 409, "ACCESS_MODE_MISMATCH")
    queued = await queue_drop(client, admin, starts_in=60)
    for other in (opened, queued):
        response = await client.post(f"/api/drops/{other['id']}/entries", headers=auth(token))
        _problem(response, 409, "ACCESS_MODE_MISMATCH")
    _problem(await client.get(f"/api/drops/{opened['id']}/queue"), 409, "ACCESS_MODE_MISMATCH")
    _problem(
        await client.post(f"/api/drops/{queued['id']}/queue", json={"x": 1}, headers=auth(token)),
        422,
        "VALIDATION_ERROR",
    )
    _problem(await client.post(f"/api/drops/{queued['id']}/queue"), 401, "UNAUTHORIZED")
    _problem(await client.post(f"/api/drops/{drawn['id']}/entries"), 401, "UNAUTHORIZED")

    cancelled = await queue_drop(client, admin, starts_in=60)
    patched = await client.patch(
        f"/api/drops/{cancelled['id']}", json={"status": "cancelled"}, headers=auth(admin)
    )
    assert patched.status_code == 200, patched.text
    response = await client.post(f"/api/drops/{cancelled['id']}/queue", headers=auth(token))
    _problem(response, 409, "DROP_NOT_LIVE")

    # A sold-out queue drop still takes joiners: they read `closed`.
    empty = await queue_drop(client, admin, starts_in=-5, totalStock=0)
    assert empty["status"] == "sold_out"
    joined = await client.post(f"/api/drops/{empty['id']}/queue", headers=auth(token))
    assert joined.status_code == 201, joined.text
    assert joined.json()["status"] == "closed"

    async def ended() -> bool:
        drop = (await client.get(f"/api/drops/{ending['id']}")).json()
        return bool(drop["status"] == "ended")

    await eventually(ended, 5)
    response = await client.post(f"/api/drops/{ending['id']}/queue", headers=auth(token))
    _problem(response, 409, "DROP_NOT_LIVE")


async def test_draw_entries_outside_the_window_and_their_size_codes(
    client: httpx.AsyncClient, container: Container
) -> None:
    admin = await admin_token(client, container)
    users = [(await signup(client))["accessToken"] for _ in range(3)]
    closing = await draw_drop(client, admin, closes_in=1)
    early = await create_drop(
        client,
        admin,
        startsAt=iso(from_now(60)),
        access="draw",
        draw={"closesAt": iso(from_now(120))},
    )
    assert early["status"] == "scheduled"
    _problem(
        await client.post(f"/api/drops/{early['id']}/entries", headers=auth(users[0])),
        409,
        "ENTRIES_CLOSED",
    )
    _problem(
        await client.post(f"/api/drops/{early['id']}/reserve", json={}, headers=auth(users[0])),
        403,
        "NOT_ADMITTED",
    )
    cancelled = await draw_drop(client, admin, closes_in=60)
    await client.patch(
        f"/api/drops/{cancelled['id']}", json={"status": "cancelled"}, headers=auth(admin)
    )
    _problem(
        await client.post(f"/api/drops/{cancelled['id']}/entries", headers=auth(users[0])),
        409,
        "ENTRIES_CLOSED",
    )

    sized = await draw_drop(client, admin, closes_in=60, totalStock=4, sizes=SIZES)
    url = f"/api/drops/{sized['id']}/entries"
    codes: list[tuple[dict[str, Any] | None, int, str]] = [
        (None, 422, "SIZE_REQUIRED"),
        ({}, 422, "SIZE_REQUIRED"),
        ({"size": "US 11"}, 422, "UNKNOWN_SIZE"),
        ({"size": "US 9", "fallbackSizes": ["US 10", "US 12"]}, 422, "UNKNOWN_SIZE"),
        ({"size": "US 9", "fallbackSizes": ["US 10"] * 6}, 422, "VALIDATION_ERROR"),
        ({"size": "US 9", "other": 1}, 422, "VALIDATION_ERROR"),
    ]
    for body, status, code in codes:
        _problem(await client.post(url, json=body, headers=auth(users[0])), status, code)
    _problem(await client.get(f"{url}/me", headers=auth(users[0])), 404, "NOT_ENTERED")
    first = await client.post(url, json={"size": "US 9"}, headers=auth(users[0]))
    assert first.status_code == 201, first.text
    assert first.json()["fallbackSizes"] == []
    again = await client.post(
        url, json={"size": "US 10", "fallbackSizes": ["US 9"]}, headers=auth(users[0])
    )
    assert again.status_code == 200, again.text
    assert again.json() == first.json()  # the first body stands
    five = await client.post(
        url, json={"size": "US 10", "fallbackSizes": ["US 9"] * 5}, headers=auth(users[1])
    )
    assert five.status_code == 201, five.text

    unsized = await draw_drop(client, admin, closes_in=60)
    _problem(
        await client.post(
            f"/api/drops/{unsized['id']}/entries", json={"size": "US 9"}, headers=auth(users[0])
        ),
        422,
        "UNKNOWN_SIZE",
    )
    plain = await client.post(f"/api/drops/{unsized['id']}/entries", headers=auth(users[0]))
    assert plain.status_code == 201, plain.text
    assert (plain.json()["size"], plain.json()["fallbackSizes"]) == (None, [])
    _problem(
        await client.post(f"/api/drops/{unsized['id']}/reserve", json={}, headers=auth(users[0])),
        403,
        "NOT_ADMITTED",
    )

    entered = await client.post(f"/api/drops/{closing['id']}/entries", headers=auth(users[0]))
    assert entered.status_code == 201, entered.text
    await fixed_record(client, closing["id"])
    _problem(
        await client.post(f"/api/drops/{closing['id']}/entries", headers=auth(users[2])),
        409,
        "ENTRIES_CLOSED",
    )
    repeat = await client.post(f"/api/drops/{closing['id']}/entries", headers=auth(users[0]))
    assert repeat.status_code == 200, repeat.text
    assert repeat.json()["entryId"] == entered.json()["entryId"]
    # A winner does not reserve: the draw made the hold.
    assert repeat.json()["status"] == "won"
    _problem(
        await client.post(f"/api/drops/{closing['id']}/reserve", json={}, headers=auth(users[1])),
        403,
        "NOT_ADMITTED",
    )


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "queue"),
        ("GET", "queue/me"),
        ("GET", "queue"),
        ("POST", "entries"),
        ("GET", "entries/me"),
        ("GET", "fairness"),
        ("GET", "fairness/entries"),
    ],
)
async def test_an_unknown_drop_is_404_on_every_access_route(
    client: httpx.AsyncClient, container: Container, method: str, path: str
) -> None:
    user = await signup(client)
    for drop_id in ("0123456789abcdef", "x" * 40, "nope%0A"):
        response = await client.request(
            method, f"/api/drops/{drop_id}/{path}", headers=auth(user["accessToken"])
        )
        _problem(response, 404, "DROP_NOT_FOUND")


async def test_missing_tickets_and_entries_and_the_fairness_record_before_and_after(
    client: httpx.AsyncClient, container: Container
) -> None:
    admin = await admin_token(client, container)
    user = await signup(client)
    token = user["accessToken"]
    opened = await create_drop(client, admin)
    for path in ("fairness", "fairness/entries"):
        _problem(await client.get(f"/api/drops/{opened['id']}/{path}"), 404, "DROP_NOT_FOUND")
    queue = await queue_drop(client, admin, starts_in=1)
    draw = await draw_drop(client, admin, closes_in=1)
    _problem(
        await client.get(f"/api/drops/{queue['id']}/queue/me", headers=auth(token)),
        404,
        "NOT_IN_QUEUE",
    )
    _problem(
        await client.get(f"/api/drops/{draw['id']}/entries/me", headers=auth(token)),
        404,
        "NOT_ENTERED",
    )
    _problem(
        await client.post(f"/api/drops/{queue['id']}/reserve", json={}, headers=auth(token)),
        403,
        "NOT_ADMITTED",
    )
    assert (await client.post(f"/api/drops/{queue['id']}/queue", headers=auth(token))).is_success
    assert (await client.post(f"/api/drops/{draw['id']}/entries", headers=auth(token))).is_success
    before = [(await client.get(f"/api/drops/{d['id']}/fairness")).json() for d in (queue, draw)]
    entries_before = [
        await client.get(f"/api/drops/{d['id']}/fairness/entries") for d in (queue, draw)
    ]
    for drop, record, listed in zip((queue, draw), before, entries_before, strict=True):
        assert record["seed"] is None
        assert record["orderFixedAt"] is None
        assert record["entries"] == 0
        assert record["algorithm"] == "hmac-sha256-v1"
        assert record["access"] == drop["access"]
        assert re.fullmatch(r"[0-9a-f]{64}", record["seedCommitment"])
        _problem(listed, 409, "ORDER_NOT_FIXED")
        revealed = await fixed_record(client, drop["id"])
        assert revealed["seedCommitment"] == record["seedCommitment"]
        seed = bytes.fromhex(revealed["seed"])
        assert re.fullmatch(r"[0-9a-f]{64}", revealed["seed"])
        assert len(seed) == 32
        assert hashlib.sha256(seed).hexdigest() == record["seedCommitment"]
        assert hashlib.sha256(revealed["seed"].encode()).hexdigest() != record["seedCommitment"]
        assert revealed["entries"] == 1
        assert revealed["orderFixedAt"].endswith("Z")
        # The drop itself shows its access settings, never the seed.
        for text in (
            (await client.get(f"/api/drops/{drop['id']}")).text,
            (await client.get("/api/drops?status=all")).text,
        ):
            assert revealed["seed"] not in text
            assert "seed" not in text.lower()
        shown = (await client.get(f"/api/drops/{drop['id']}")).json()
        assert shown["access"] == drop["access"]
        assert (shown["queue"] is None) == (drop["access"] == "draw")
        assert (shown["draw"] is None) == (drop["access"] == "queue")


async def test_a_drop_redis_lost_is_rebuilt_for_a_join_an_entry_and_their_reads(
    client: httpx.AsyncClient, container: Container
) -> None:
    """After a flush each of the four calls rebuilds the drop from PostgreSQL and is
    answered: a join or an entry is made; a read finds the drop but no ticket or entry
    (they lived in Redis alone), rather than DROP_NOT_FOUND. (The first join or entry of
    a drop reads its seed through the drop service, which rebuilds the drop itself: the
    calls after it are the ones that must.)"""
    admin = await admin_token(client, container)
    first, then = [auth((await signup(client))["accessToken"]) for _ in range(2)]
    queued = await queue_drop(client, admin, starts_in=60)
    drawn = await draw_drop(client, admin, closes_in=60)
    for drop, path, missing in (
        (queued, "queue", ("queue/me", "NOT_IN_QUEUE")),
        (drawn, "entries", ("entries/me", "NOT_ENTERED")),
    ):
        made = await client.post(f"/api/drops/{drop['id']}/{path}", headers=first)
        assert made.status_code == 201, made.text
        await container.redis.flushdb()
        made = await client.post(f"/api/drops/{drop['id']}/{path}", headers=then)
        assert made.status_code == 201, made.text
        await container.redis.flushdb()
        read = await client.get(f"/api/drops/{drop['id']}/{missing[0]}", headers=then)
        _problem(read, 404, missing[1])
