"""Sizes (issue 20, CONTRACT.md "Sizes"): each size of a drop keeps its own stock.

Every test runs on the real stores and ends with the invariant: `assert_invariant` (the
reconciler's check, which includes `size_problems`, and the live holds in step) and,
through `assert_sizes_whole`, each size's own books read in one step from Redis
(available + live holds + sold == total, the sizes adding up to the drop) against
PostgreSQL's totals and purchases per size.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from app import commands
from app.background.reconciler import Reconciler
from app.container import Container
from app.db.models import DropSize, Purchase
from app.store import keys
from app.store.holds import ReleaseOutcome, ReleaseReason
from tests.integration.engine.helpers import (
    AppFactory,
    background_of,
    past_redis_start,
    purchase,
    reserve,
    users,
    wait_until,
)
from tests.support.factories import admin_token, assert_invariant, auth, create_drop

NO_COOLDOWN = {"reserve_cooldown_seconds": 0}
SHORT = {"reservation_ttl_seconds": 1}


# --- helpers ----------------------------------------------------------------


async def sized_drop(
    client: httpx.AsyncClient, admin: str, sizes: list[tuple[str, int]], **fields: Any
) -> dict[str, Any]:
    """A live drop with `sizes` (label, stock) in that order; totalStock omitted."""
    body: dict[str, Any] = {
        "name": "Sized Runner",
        "priceCents": 15000,
        "sizes": [{"size": label, "totalStock": stock} for label, stock in sizes],
        **fields,
    }
    response = await client.post("/api/drops", json=body, headers=auth(admin))
    assert response.status_code == 201, response.text
    drop: dict[str, Any] = response.json()
    return drop


async def reserve_size(
    client: httpx.AsyncClient,
    drop_id: str,
    token: str,
    size: str | None = None,
    fallbacks: list[str] | None = None,
) -> httpx.Response:
    body: dict[str, Any] = {}
    if size is not None:
        body["size"] = size
    if fallbacks is not None:
        body["fallbackSizes"] = fallbacks
    return await client.post(f"/api/drops/{drop_id}/reserve", json=body, headers=auth(token))


def outcome(response: httpx.Response) -> str | int:
    return response.status_code if response.status_code < 300 else response.json()["code"]


async def view(client: httpx.AsyncClient, drop_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/drops/{drop_id}")
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


async def available_by_size(client: httpx.AsyncClient, drop_id: str) -> dict[str, int]:
    return {s["size"]: s["availableStock"] for s in (await view(client, drop_id))["sizes"]}


async def redis_sizes(container: Container, drop_id: str) -> dict[str, tuple[int, int, int, int]]:
    """label -> (total, available, sold, live holds), as Redis has them, read in one step."""
    found = await container.drop_store.counts(drop_id)
    assert found is not None, f"drop {drop_id} not mirrored"
    return {s.size: (s.total, s.available, s.sold, s.live_holds) for s in found[1]}


async def assert_sizes_whole(container: Container, drop_id: str) -> None:
    """The invariant per drop and per size, Redis against PostgreSQL:

    - `assert_invariant` (the reconciler's check: healthy, no `size_problems`; the live
      holds in step with each other and with PostgreSQL);
    - the reconciler's check of this drop names no size problem;
    - per size: available >= 0, available + live holds + sold == total, the total is
      PostgreSQL's, sold is PostgreSQL's purchases of that size; the sizes add up to the
      drop's own counters.
    """
    await assert_invariant(container, drop_id)
    checks = await Reconciler(container.db, container.drop_store, container.hold_store).check()
    (check,) = [c for c in checks if c.drop_id == drop_id]
    assert check.size_problems == (), check
    assert check.healthy, check
    found = await container.drop_store.counts(drop_id)
    assert found is not None
    (total, available, sold, live), sizes = found
    async with container.db.begin() as session:
        rows = await session.execute(
            select(DropSize.label, DropSize.total_stock)
            .where(DropSize.drop_id == drop_id)
            .order_by(DropSize.position)
        )
        totals = dict(rows.all())
        bought = await session.execute(
            select(Purchase.size, func.count())
            .where(Purchase.drop_id == drop_id)
            .group_by(Purchase.size)
        )
        sold_pg = {size: int(n) for size, n in bought.all()}
    assert [s.size for s in sizes] == list(totals), (sizes, totals)
    for s in sizes:
        assert s.available >= 0, s
        assert s.available + s.live_holds + s.sold == s.total, s
        assert s.total == totals[s.size], (s, totals)
        assert s.sold == sold_pg.get(s.size, 0), (s, sold_pg)
    if sizes:
        assert None not in sold_pg, f"a purchase without a size on a sized drop: {sold_pg}"
        assert sum(s.total for s in sizes) == total
        assert sum(s.available for s in sizes) == available
        assert sum(s.sold for s in sizes) == sold
        assert sum(s.live_holds for s in sizes) == live


# --- create -----------------------------------------------------------------


async def test_create_with_sizes_keeps_their_order_and_sums_the_totals(
    client: httpx.AsyncClient, container: Container
) -> None:
    admin = await admin_token(client, container)
    sizes = [("US 10", 4), ("US 8", 2), ("EU 43⅓", 0), ("US 9.5", 3), ("W 7.5 / M 6", 1)]
    drop = await sized_drop(client, admin, sizes)

    assert drop["sizes"] == [
        {"size": label, "totalStock": stock, "availableStock": stock} for label, stock in sizes
    ]
    assert (drop["totalStock"], drop["availableStock"]) == (10, 10)
    assert drop["status"] == "live"
    assert await view(client, drop["id"]) == drop
    listed = (await client.get("/api/drops")).json()
    assert [d["sizes"] for d in listed if d["id"] == drop["id"]] == [drop["sizes"]]

    # totalStock equal to the sum is accepted; the longest label (16) and 40 sizes too.
    same = await sized_drop(client, admin, [("A", 2), ("B", 3)], totalStock=5)
    assert [s["size"] for s in same["sizes"]] == ["A", "B"]
    assert same["totalStock"] == 5
    widest = [(f"{i:02d}" + "x" * 14, 1) for i in range(40)]
    forty = await sized_drop(client, admin, widest)
    assert [s["size"] for s in forty["sizes"]] == [label for label, _ in widest]
    assert forty["totalStock"] == 40

    plain = await create_drop(client, admin, totalStock=3)
    assert plain["sizes"] == []
    for made in (drop, same, forty, plain):
        await assert_sizes_whole(container, made["id"])


def _sizes(*pairs: tuple[str, int]) -> list[dict[str, Any]]:
    return [{"size": label, "totalStock": stock} for label, stock in pairs]


BAD_CREATES: dict[str, dict[str, Any]] = {
    "empty sizes": {"sizes": []},
    "duplicate labels": {"sizes": _sizes(("US 9", 1), ("US 9", 2))},
    "totals disagree": {"sizes": _sizes(("US 9", 1), ("US 10", 2)), "totalStock": 4},
    "41 sizes": {"sizes": _sizes(*((f"S{i}", 1) for i in range(41)))},
    "label of 17": {"sizes": _sizes(("x" * 17, 1))},
    "empty label": {"sizes": _sizes(("", 1))},
    "tab in label": {"sizes": _sizes(("US\t9", 1))},
    "newline in label": {"sizes": _sizes(("US 9\n", 1))},
    "DEL in label": {"sizes": _sizes(("US\x7f9", 1))},
    "NUL in label": {"sizes": _sizes(("US\x009", 1))},
    "negative stock": {"sizes": _sizes(("US 9", -1))},
    "label not a string": {"sizes": [{"size": 9, "totalStock": 1}]},
    "no stock at all": {},
}


@pytest.mark.parametrize("extra", list(BAD_CREATES.values()), ids=list(BAD_CREATES))
async def test_create_refuses_bad_sizes(
    client: httpx.AsyncClient, container: Container, extra: dict[str, Any]
) -> None:
    admin = await admin_token(client, container)
    body = {"name": "Bad sizes", "priceCents": 100, **extra}
    response = await client.post("/api/drops", json=body, headers=auth(admin))
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "VALIDATION_ERROR"
    assert (await client.get("/api/drops")).json() == []  # nothing was created
    await assert_invariant(container)


# --- reserve: what is asked ---------------------------------------------------


async def test_reserve_errors_on_what_is_asked(
    client: httpx.AsyncClient, container: Container
) -> None:
    admin = await admin_token(client, container)
    labels = ["A", "B", "C", "D", "E", "F", "G"]
    drop = await sized_drop(client, admin, [(label, 1) for label in labels])
    plain = await create_drop(client, admin, totalStock=2)
    (user,) = await users(container, 1)
    token, drop_id = user.access_token, drop["id"]

    bare = await reserve(client, drop_id, token)  # no body at all
    assert (bare.status_code, bare.json()["code"]) == (422, "SIZE_REQUIRED")
    cases: list[tuple[dict[str, Any], str]] = [
        ({}, "SIZE_REQUIRED"),
        ({"size": "Z"}, "UNKNOWN_SIZE"),
        ({"size": "a"}, "UNKNOWN_SIZE"),  # labels are exact
        ({"size": "A", "fallbackSizes": ["B", "Z"]}, "UNKNOWN_SIZE"),  # even with A in stock
        ({"size": "A", "fallbackSizes": ["B", "C", "D", "E", "F", "G"]}, "VALIDATION_ERROR"),
        ({"fallbackSizes": ["A"]}, "VALIDATION_ERROR"),
        ({"size": "x" * 17}, "VALIDATION_ERROR"),
        ({"size": "A\n"}, "VALIDATION_ERROR"),
        ({"size": "A", "fallbackSizes": ["B\t"]}, "VALIDATION_ERROR"),
        ({"size": 9}, "VALIDATION_ERROR"),
    ]
    for body, code in cases:
        answer = await client.post(f"/api/drops/{drop_id}/reserve", json=body, headers=auth(token))
        assert answer.status_code == 422, (body, answer.text)
        assert answer.json()["code"] == code, (body, answer.json())
    for body in ({"size": "A"}, {"size": "A", "fallbackSizes": []}):
        answer = await client.post(
            f"/api/drops/{plain['id']}/reserve", json=body, headers=auth(token)
        )
        assert (answer.status_code, answer.json()["code"]) == (422, "UNKNOWN_SIZE"), body
    # Nothing was held by any refusal.
    assert await available_by_size(client, drop_id) == dict.fromkeys(labels, 1)
    assert (await view(client, plain["id"]))["availableStock"] == 2

    # Five fallbacks are allowed; the first of them with a unit is held.
    held = await reserve_size(client, drop_id, token, "A", ["B", "C", "D", "E", "F"])
    assert held.status_code == 201, held.text
    assert held.json()["size"] == "A"
    unsized = await client.post(f"/api/drops/{plain['id']}/reserve", json={}, headers=auth(token))
    assert unsized.status_code == 201, unsized.text
    assert unsized.json()["size"] is None
    await assert_sizes_whole(container, drop_id)
    await assert_sizes_whole(container, plain["id"])


async def test_fallbacks_in_order_then_size_sold_out_then_sold_out(
    client: httpx.AsyncClient, container: Container
) -> None:
    admin = await admin_token(client, container)
    drop = await sized_drop(client, admin, [("A", 1), ("B", 1), ("C", 1), ("D", 0)])
    crowd = await users(container, 7)
    drop_id = drop["id"]

    async def ask(i: int, size: str, fallbacks: list[str] | None = None) -> str | int:
        answer = await reserve_size(client, drop_id, crowd[i].access_token, size, fallbacks)
        return answer.json()["size"] if answer.status_code == 201 else outcome(answer)

    assert await ask(0, "A") == "A"
    assert await ask(1, "A", ["C", "B"]) == "C"  # the fallbacks' order, not the drop's
    assert await ask(2, "A", ["C"]) == "SIZE_SOLD_OUT"  # B is left, but not asked for
    assert await ask(3, "D") == "SIZE_SOLD_OUT"  # a size with no stock from the start
    assert await available_by_size(client, drop_id) == {"A": 0, "B": 1, "C": 0, "D": 0}
    assert await ask(4, "D", ["A", "C", "B"]) == "B"
    assert await ask(5, "B") == "SOLD_OUT"  # the whole drop is gone
    assert await ask(6, "D", ["A"]) == "SOLD_OUT"
    current = await view(client, drop_id)
    # Sold out, live while holds may come back (the drop's own rule).
    assert (current["availableStock"], current["status"]) == (0, "live")
    assert await redis_sizes(container, drop_id) == {
        "A": (1, 0, 0, 1),
        "B": (1, 0, 0, 1),
        "C": (1, 0, 0, 1),
        "D": (0, 0, 0, 0),
    }
    await assert_sizes_whole(container, drop_id)


# --- races --------------------------------------------------------------------


async def test_60_shoppers_race_for_two_sizes(
    client: httpx.AsyncClient, container: Container
) -> None:
    admin = await admin_token(client, container)
    drop = await sized_drop(client, admin, [("A", 5), ("B", 5)])
    crowd = await users(container, 60)

    answers = await asyncio.gather(
        *(reserve_size(client, drop["id"], s.access_token, "A", ["B"]) for s in crowd)
    )

    assert Counter(outcome(a) for a in answers) == {201: 10, "SOLD_OUT": 50}
    assert Counter(a.json()["size"] for a in answers if a.status_code == 201) == {"A": 5, "B": 5}
    current = await view(client, drop["id"])
    assert (current["availableStock"], current["activeReservations"]) == (0, 10)
    assert await available_by_size(client, drop["id"]) == {"A": 0, "B": 0}
    await assert_sizes_whole(container, drop["id"])


async def test_race_for_gone_sizes_while_another_is_left_is_size_sold_out(
    client: httpx.AsyncClient, container: Container
) -> None:
    admin = await admin_token(client, container)
    drop = await sized_drop(client, admin, [("A", 5), ("B", 5), ("C", 3)])
    crowd = await users(container, 60)

    answers = await asyncio.gather(
        *(reserve_size(client, drop["id"], s.access_token, "A", ["B"]) for s in crowd)
    )

    assert Counter(outcome(a) for a in answers) == {201: 10, "SIZE_SOLD_OUT": 50}
    assert Counter(a.json()["size"] for a in answers if a.status_code == 201) == {"A": 5, "B": 5}
    assert await available_by_size(client, drop["id"]) == {"A": 0, "B": 0, "C": 3}
    assert (await view(client, drop["id"]))["status"] == "live"
    await assert_sizes_whole(container, drop["id"])


# --- the per-user limit -----------------------------------------------------------


async def test_per_user_limit_spans_sizes(make_app: AppFactory) -> None:
    client, container = await make_app(**NO_COOLDOWN)
    admin = await admin_token(client, container)
    drop = await sized_drop(client, admin, [("A", 5), ("B", 5), ("C", 5)], perUserLimit=2)
    buyer, racer = await users(container, 2)
    drop_id, token = drop["id"], buyer.access_token

    first = await reserve_size(client, drop_id, token, "A")
    second = await reserve_size(client, drop_id, token, "B")
    assert [first.json()["size"], second.json()["size"]] == ["A", "B"]
    assert outcome(await reserve_size(client, drop_id, token, "C")) == "LIMIT_REACHED"
    assert (await purchase(client, first.json()["id"], token)).status_code == 201
    cancelled = await client.delete(f"/api/reservations/{second.json()['id']}", headers=auth(token))
    assert cancelled.status_code == 204
    # One bought (A) and nothing held: one more unit, of any size, then the limit.
    third = await reserve_size(client, drop_id, token, "C")
    assert (third.status_code, third.json()["size"]) == (201, "C")
    assert outcome(await reserve_size(client, drop_id, token, "B", ["A"])) == "LIMIT_REACHED"

    # Twelve reserves at once over three sizes by one user: two holds in all.
    answers = await asyncio.gather(
        *(reserve_size(client, drop_id, racer.access_token, label) for label in ["A", "B", "C"] * 4)
    )
    assert Counter(outcome(a) for a in answers) == {201: 2, "LIMIT_REACHED": 10}
    current = await view(client, drop_id)
    assert (current["availableStock"], current["activeReservations"]) == (15 - 1 - 1 - 2, 3)
    await assert_sizes_whole(container, drop_id)


# --- units going back -------------------------------------------------------------


async def test_cancel_returns_the_unit_to_its_size_once(make_app: AppFactory) -> None:
    client, container = await make_app(**NO_COOLDOWN)
    admin = await admin_token(client, container)
    drop = await sized_drop(client, admin, [("A", 2), ("B", 2), ("C", 1)])
    crowd = await users(container, 4)
    drop_id = drop["id"]
    held = [
        (await reserve_size(client, drop_id, s.access_token, size)).json()
        for s, size in zip(crowd, ["A", "A", "B", "C"], strict=True)
    ]
    assert [h["size"] for h in held] == ["A", "A", "B", "C"]
    assert await available_by_size(client, drop_id) == {"A": 0, "B": 1, "C": 0}

    # Ten cancels of one A hold at once, then the engine's own release again: one unit back.
    answers = await asyncio.gather(
        *(
            client.delete(f"/api/reservations/{held[0]['id']}", headers=auth(crowd[0].access_token))
            for _ in range(10)
        )
    )
    assert {a.status_code for a in answers} == {204}
    ref = keys.parse_hold_id(held[0]["id"])
    assert ref is not None
    again = await container.hold_store.release(ref, ReleaseReason.CANCELLED)
    assert again.outcome is ReleaseOutcome.ALREADY
    assert await available_by_size(client, drop_id) == {"A": 1, "B": 1, "C": 0}
    assert await redis_sizes(container, drop_id) == {
        "A": (2, 1, 0, 1),
        "B": (2, 1, 0, 1),
        "C": (1, 0, 0, 1),
    }

    # A bought C: cancelling it returns nothing; cancelling B returns a B.
    assert (await purchase(client, held[3]["id"], crowd[3].access_token)).status_code == 201
    bought = await client.delete(
        f"/api/reservations/{held[3]['id']}", headers=auth(crowd[3].access_token)
    )
    assert bought.status_code == 409
    gone = await client.delete(
        f"/api/reservations/{held[2]['id']}", headers=auth(crowd[2].access_token)
    )
    assert gone.status_code == 204
    assert await redis_sizes(container, drop_id) == {
        "A": (2, 1, 0, 1),
        "B": (2, 2, 0, 0),
        "C": (1, 0, 1, 0),
    }
    # The returned A is held again by the next shopper asking for A first.
    retaken = await reserve_size(client, drop_id, crowd[0].access_token, "A", ["B"])
    assert retaken.json()["size"] == "A"
    assert await available_by_size(client, drop_id) == {"A": 0, "B": 2, "C": 0}
    await assert_sizes_whole(container, drop_id)


async def _hold_sizes_left(container: Container, drop_id: str) -> int:
    return int(await container.redis.hlen(keys.DropKeys(drop_id).hold_sizes))


@pytest.mark.slow
async def test_expiry_returns_units_to_their_sizes_once(make_app: AppFactory) -> None:
    """Two apps' listeners, sweepers and reconcilers race to expire the same holds."""
    fast = {**SHORT, **NO_COOLDOWN, "sweep_interval_ms": 50, "reconcile_interval_seconds": 1}
    client, container = await make_app(**fast)
    _, other = await make_app(**fast)
    await container.redis.config_set("notify-keyspace-events", "Ex")
    await past_redis_start(container)
    admin = await admin_token(client, container)
    drop = await sized_drop(client, admin, [("A", 10), ("B", 6), ("C", 4)], perUserLimit=5)
    drop_id = drop["id"]
    crowd = await users(container, 18)
    asks = ["A"] * 8 + ["B"] * 6 + ["C"] * 4
    answers = await asyncio.gather(
        *(
            reserve_size(client, drop_id, s.access_token, size)
            for s, size in zip(crowd, asks, strict=True)
        )
    )
    assert [a.json()["size"] for a in answers] == asks
    # Two B holds are bought before they expire: those units stay sold.
    for answer, shopper in list(zip(answers, crowd, strict=True))[8:10]:
        assert (
            await purchase(client, answer.json()["id"], shopper.access_token)
        ).status_code == 201
    assert await available_by_size(client, drop_id) == {"A": 2, "B": 0, "C": 0}

    async def all_back() -> bool:
        return await available_by_size(client, drop_id) == {"A": 10, "B": 4, "C": 4}

    await wait_until(all_back, within=8, what="every held unit back in its size")
    # Every layer has another go at the same holds: nothing comes back twice.
    for answer in answers[:8] + answers[10:]:
        ref = keys.parse_hold_id(answer.json()["id"])
        assert ref is not None
        late = await other.hold_store.release(ref, ReleaseReason.EXPIRED)
        assert late.outcome is ReleaseOutcome.ALREADY, late
    await background_of(client).sweeper.sweep([drop_id])
    await background_of(client).reconciler.run_once()

    assert await redis_sizes(container, drop_id) == {
        "A": (10, 10, 0, 0),
        "B": (6, 4, 2, 0),
        "C": (4, 4, 0, 0),
    }
    assert await _hold_sizes_left(container, drop_id) == 0  # no ended hold keeps its size
    closed = await container.redis.hvals(keys.DropKeys(drop_id).closed)
    assert Counter(str(c).split("|", 1)[0] for c in closed) == {"EXPIRED": 16, "PURCHASED": 2}
    await assert_sizes_whole(container, drop_id)


# --- restock ------------------------------------------------------------------------


async def test_restock_per_size(client: httpx.AsyncClient, container: Container) -> None:
    admin = await admin_token(client, container)
    drop = await sized_drop(client, admin, [("A", 1), ("B", 2)])
    plain = await create_drop(client, admin, totalStock=3)
    (shopper,) = await users(container, 1)
    drop_id = drop["id"]
    held = await reserve_size(client, drop_id, shopper.access_token, "A")
    assert held.json()["size"] == "A"

    async def restock(target: str, body: dict[str, Any]) -> httpx.Response:
        return await client.post(f"/api/drops/{target}/restock", json=body, headers=auth(admin))

    refusals: list[tuple[str, dict[str, Any], str]] = [
        (drop_id, {"quantity": 2}, "SIZE_REQUIRED"),
        (drop_id, {"quantity": 2, "size": "Z"}, "UNKNOWN_SIZE"),
        (drop_id, {"quantity": 2, "size": "a"}, "UNKNOWN_SIZE"),
        (drop_id, {"quantity": 2, "size": "A\n"}, "VALIDATION_ERROR"),
        (drop_id, {"quantity": 0, "size": "A"}, "VALIDATION_ERROR"),
        (plain["id"], {"quantity": 2, "size": "A"}, "UNKNOWN_SIZE"),
    ]
    for target, body, code in refusals:
        answer = await restock(target, body)
        assert (answer.status_code, answer.json()["code"]) == (422, code), (body, answer.text)
    before = await view(client, drop_id)
    assert [(s["totalStock"], s["availableStock"]) for s in before["sizes"]] == [(1, 0), (2, 2)]
    assert (before["totalStock"], before["availableStock"]) == (3, 2)

    done = await restock(drop_id, {"quantity": 3, "size": "A"})
    assert done.status_code == 200, done.text
    assert done.json()["sizes"] == [
        {"size": "A", "totalStock": 4, "availableStock": 3},
        {"size": "B", "totalStock": 2, "availableStock": 2},
    ]
    assert (done.json()["totalStock"], done.json()["availableStock"]) == (6, 5)
    assert await view(client, drop_id) == done.json()
    assert (await restock(plain["id"], {"quantity": 1})).json()["totalStock"] == 4
    assert (await view(client, plain["id"]))["sizes"] == []

    # A drop with nothing left, restocked in one size, sells that size only.
    crowd = await users(container, 5)
    answers = [await reserve_size(client, drop_id, s.access_token, "B", ["A"]) for s in crowd]
    assert [a.json()["size"] for a in answers] == ["B", "B", "A", "A", "A"]
    assert (await view(client, drop_id))["availableStock"] == 0
    assert (await restock(drop_id, {"quantity": 1, "size": "B"})).status_code == 200
    (late,) = await users(container, 1)
    assert outcome(await reserve_size(client, drop_id, late.access_token, "A")) == "SIZE_SOLD_OUT"
    assert (await reserve_size(client, drop_id, late.access_token, "B")).json()["size"] == "B"
    await assert_sizes_whole(container, drop_id)
    await assert_sizes_whole(container, plain["id"])


# --- the size on reservations and purchases ---------------------------------------------


async def test_reservation_and_purchase_carry_the_size(
    client: httpx.AsyncClient, container: Container
) -> None:
    admin = await admin_token(client, container)
    drop = await sized_drop(client, admin, [("US 9", 0), ("US 9.5", 2)], perUserLimit=3)
    plain = await create_drop(client, admin, totalStock=2, perUserLimit=2)
    (user,) = await users(container, 1)
    token = user.access_token

    held = await reserve_size(client, drop["id"], token, "US 9", ["US 9.5"])
    assert held.status_code == 201, held.text
    assert set(held.json()) == {"id", "dropId", "status", "expiresAt", "createdAt", "size"}
    assert held.json()["size"] == "US 9.5"  # the size actually held, not the one asked
    kept = (await reserve_size(client, drop["id"], token, "US 9.5")).json()
    bare = (await reserve(client, plain["id"], token)).json()
    assert bare["size"] is None

    mine = (await client.get("/api/me/reservations", headers=auth(token))).json()
    assert {r["id"]: r["size"] for r in mine} == {
        held.json()["id"]: "US 9.5",
        kept["id"]: "US 9.5",
        bare["id"]: None,
    }
    bought = await purchase(client, held.json()["id"], token)
    assert bought.status_code == 201, bought.text
    assert bought.json()["size"] == "US 9.5"
    replay = await purchase(client, held.json()["id"], token)  # the recorded purchase again
    assert (replay.status_code, replay.json()) == (200, bought.json())
    plain_bought = await purchase(client, bare["id"], token)
    assert plain_bought.json()["size"] is None

    purchases = (await client.get("/api/me/purchases", headers=auth(token))).json()
    assert {p["reservationId"]: p["size"] for p in purchases} == {
        held.json()["id"]: "US 9.5",
        bare["id"]: None,
    }
    mine = (await client.get("/api/me/reservations", headers=auth(token))).json()
    assert [(r["id"], r["size"]) for r in mine] == [(kept["id"], "US 9.5")]
    async with container.db.begin() as session:
        rows = await session.execute(select(Purchase.reservation_id, Purchase.size))
        assert dict(rows.all()) == {held.json()["id"]: "US 9.5", bare["id"]: None}
    assert await redis_sizes(container, drop["id"]) == {
        "US 9": (0, 0, 0, 0),
        "US 9.5": (2, 0, 1, 1),
    }
    await assert_sizes_whole(container, drop["id"])
    await assert_sizes_whole(container, plain["id"])


# --- the reconciler ---------------------------------------------------------------------


async def test_reconciler_rebuilds_sizes_after_flushall(
    client: httpx.AsyncClient, container: Container, capsys: pytest.CaptureFixture[str]
) -> None:
    admin = await admin_token(client, container)
    drop = await sized_drop(client, admin, [("A", 3), ("B", 2), ("C", 2)])
    plain = await create_drop(client, admin, totalStock=3)
    crowd = await users(container, 6)
    drop_id = drop["id"]
    for shopper, size in zip(crowd[:3], ["A", "A", "B"], strict=True):
        held = (await reserve_size(client, drop_id, shopper.access_token, size)).json()
        assert (await purchase(client, held["id"], shopper.access_token)).status_code == 201
    lost = [
        (await reserve_size(client, drop_id, crowd[3].access_token, "A")).json(),
        (await reserve_size(client, drop_id, crowd[4].access_token, "C")).json(),
    ]
    plain_held = (await reserve(client, plain["id"], crowd[5].access_token)).json()
    assert await available_by_size(client, drop_id) == {"A": 0, "B": 1, "C": 1}

    await container.redis.flushall()  # Redis restarts empty: every hold is gone
    await container.redis.script_flush()
    await background_of(client).reconciler.run_once()

    # Holds lost, purchases kept: available per size = total - sold in that size.
    assert await redis_sizes(container, drop_id) == {
        "A": (3, 1, 2, 0),
        "B": (2, 1, 1, 0),
        "C": (2, 2, 0, 0),
    }
    rebuilt = await view(client, drop_id)
    assert rebuilt["sizes"] == [
        {"size": "A", "totalStock": 3, "availableStock": 1},
        {"size": "B", "totalStock": 2, "availableStock": 1},
        {"size": "C", "totalStock": 2, "availableStock": 2},
    ]
    assert (rebuilt["totalStock"], rebuilt["availableStock"]) == (7, 4)
    assert (await view(client, plain["id"]))["sizes"] == []
    for hold, shopper in zip(lost, crowd[3:5], strict=True):
        mine = await client.get("/api/me/reservations", headers=auth(shopper.access_token))
        assert mine.json() == []
        assert (await purchase(client, hold["id"], shopper.access_token)).status_code in (404, 410)
    assert plain_held["size"] is None
    assert await commands.check(container.settings) == 0
    capsys.readouterr()

    # The rebuilt counters sell on: the per-user count came from purchases, sizes are right.
    assert outcome(await reserve_size(client, drop_id, crowd[0].access_token, "C")) == (
        "LIMIT_REACHED"
    )
    again = await reserve_size(client, drop_id, crowd[3].access_token, "A", ["B"])
    assert again.json()["size"] == "A"
    (late,) = await users(container, 1)
    assert outcome(await reserve_size(client, drop_id, late.access_token, "A")) == "SIZE_SOLD_OUT"
    await assert_sizes_whole(container, drop_id)
    await assert_sizes_whole(container, plain["id"])


async def test_check_reports_and_the_reconciler_repairs_a_drifted_size(
    client: httpx.AsyncClient, container: Container, capsys: pytest.CaptureFixture[str]
) -> None:
    """The drop's own counters are right; one size's are not (a unit moved from B to A)."""
    admin = await admin_token(client, container)
    drop = await sized_drop(client, admin, [("A", 3), ("B", 3)])
    (user,) = await users(container, 1)
    drop_id = drop["id"]
    assert (await reserve_size(client, drop_id, user.access_token, "B")).json()["size"] == "B"
    sizes_key = keys.DropKeys(drop_id).sizes
    await container.redis.hincrby(sizes_key, "a:1", 1)
    await container.redis.hincrby(sizes_key, "a:2", -1)

    checks = await Reconciler(container.db, container.drop_store, container.hold_store).check()
    (check,) = checks
    assert check.available + check.live_holds + check.sold == check.total  # the drop is whole
    assert not check.healthy
    assert sorted(p.split(":", 1)[0] for p in check.size_problems) == ["A", "B"]
    assert await commands.check(container.settings) == 1
    assert "size A: available 4 + held 0 + sold 0 != total 3" in capsys.readouterr().out

    await background_of(client).reconciler.run_once()
    assert await available_by_size(client, drop_id) == {"A": 3, "B": 2}
    assert await commands.check(container.settings) == 0
    await assert_sizes_whole(container, drop_id)
