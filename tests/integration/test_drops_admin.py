"""Drop management by admins: create (shape, defaults, validation), patch, cancel, restock."""

from __future__ import annotations

import re
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

DROP_FIELDS = set(
    "id name brand imageUrl priceCents currency totalStock availableStock perUserLimit"
    " startsAt endsAt status activeReservations recentBuyers sizes access queue draw".split()
)
ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$")
UNKNOWN_DROP = "0123456789abcdef"
OMIT = object()  # a field left out of the body
VALID: dict[str, Any] = {"name": "Air Test", "priceCents": 15000, "totalStock": 5}


def z(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def assert_problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status
    assert body["code"] == code


async def test_create_returns_the_full_drop_shape(
    client: httpx.AsyncClient, container: Container
) -> None:
    admin = await admin_token(client, container)
    starts, ends = in_future(60), in_future(3600)
    body = {
        "name": "Jordan 1 Chicago",
        "brand": "Nike",
        "imageUrl": "https://img.example.com/j1.png",
        "priceCents": 17999,
        "currency": "EUR",
        "totalStock": 25,
        "perUserLimit": 2,
        "startsAt": z(starts),
        "endsAt": z(ends),
    }
    response = await client.post("/api/drops", json=body, headers=auth(admin))
    assert response.status_code == 201, response.text
    assert response.headers["content-type"].startswith("application/json")
    drop = response.json()
    assert set(drop) == DROP_FIELDS
    assert isinstance(drop["id"], str)
    assert drop["id"]
    assert drop["name"] == "Jordan 1 Chicago"
    assert drop["brand"] == "Nike"
    assert drop["imageUrl"] == "https://img.example.com/j1.png"
    assert (drop["priceCents"], drop["currency"]) == (17999, "EUR")
    assert (drop["totalStock"], drop["availableStock"], drop["perUserLimit"]) == (25, 25, 2)
    assert ISO_Z.match(drop["startsAt"])
    assert ISO_Z.match(drop["endsAt"])
    assert abs(parse(drop["startsAt"]) - starts) < timedelta(milliseconds=2)
    assert abs(parse(drop["endsAt"]) - ends) < timedelta(milliseconds=2)
    assert drop["status"] == "scheduled"
    assert drop["activeReservations"] == 0
    assert (drop["access"], drop["queue"], drop["draw"]) == ("open", None, None)
    assert drop["recentBuyers"] == []
    assert drop["sizes"] == []


async def test_create_defaults(client: httpx.AsyncClient, container: Container) -> None:
    admin = await admin_token(client, container)
    before = datetime.now(UTC)
    drop = await create_drop(client, admin, name="Defaults", priceCents=0, totalStock=3)
    after = datetime.now(UTC)
    assert drop["perUserLimit"] == 1
    assert drop["currency"] == "USD"
    assert (drop["brand"], drop["imageUrl"], drop["endsAt"]) == (None, None, None)
    assert ISO_Z.match(drop["startsAt"])
    starts = parse(drop["startsAt"])
    assert before - timedelta(milliseconds=2) <= starts <= after + timedelta(milliseconds=2)
    assert drop["status"] == "live"


async def test_create_with_zero_stock_is_sold_out(
    client: httpx.AsyncClient, container: Container
) -> None:
    admin = await admin_token(client, container)
    drop = await create_drop(client, admin, totalStock=0)
    assert (drop["totalStock"], drop["availableStock"], drop["status"]) == (0, 0, "sold_out")


async def test_created_drop_is_mirrored_before_the_answer(
    client: httpx.AsyncClient, container: Container
) -> None:
    admin = await admin_token(client, container)
    drop = await create_drop(client, admin, totalStock=7)
    mirrored = await container.drop_store.read([drop["id"]])
    assert drop["id"] in mirrored
    assert mirrored[drop["id"]].counters.available == 7
    assert mirrored[drop["id"]].counters.total == 7
    seen = await client.get(f"/api/drops/{drop['id']}")
    assert seen.status_code == 200
    assert seen.json() == drop
    await assert_invariant(container, drop["id"])


async def test_create_requires_a_token(client: httpx.AsyncClient) -> None:
    assert_problem(await client.post("/api/drops", json=VALID), 401, "UNAUTHORIZED")
    bad = await client.post("/api/drops", json=VALID, headers=auth("not-a-jwt"))
    assert_problem(bad, 401, "UNAUTHORIZED")


async def test_create_forbidden_for_a_customer(
    client: httpx.AsyncClient, container: Container
) -> None:
    user = await signup(client)
    response = await client.post("/api/drops", json=VALID, headers=auth(user["accessToken"]))
    assert_problem(response, 403, "FORBIDDEN")
    listed = await client.get("/api/drops", params={"status": "all"})
    assert listed.json() == []


INVALID_CREATES: list[tuple[str, dict[str, Any]]] = [
    ("unknown field", {"colour": "red"}),
    ("snake_case field", {"total_stock": 5}),
    ("negative stock", {"totalStock": -1}),
    ("too much stock", {"totalStock": 10_000_001}),
    ("negative price", {"priceCents": -1}),
    ("zero per-user limit", {"perUserLimit": 0}),
    ("ends before starts", {"startsAt": z(in_future(600)), "endsAt": z(in_future(60))}),
    ("ends at starts", {"startsAt": "2031-01-01T00:00:00Z", "endsAt": "2031-01-01T00:00:00Z"}),
    ("naive startsAt", {"startsAt": "2031-01-01T00:00:00"}),
    ("naive endsAt", {"endsAt": "2031-01-01T00:00:00"}),
    ("startsAt as unix seconds", {"startsAt": 1924992000}),
    ("startsAt as a numeric string", {"startsAt": "1924992000"}),
    ("startsAt a bare date", {"startsAt": "2031-01-01"}),
    ("endsAt without seconds", {"endsAt": "2031-01-01T00:00Z"}),
    ("endsAt with a space", {"endsAt": "2031-01-01 00:00:00Z"}),
    ("lower-case currency", {"currency": "usd"}),
    ("long currency", {"currency": "USDX"}),
    ("empty name", {"name": ""}),
    ("blank name", {"name": "   "}),
    ("201-char name", {"name": "x" * 201}),
    ("NUL in name", {"name": "Air\x00Max"}),
    ("image not a URL", {"imageUrl": "not a url"}),
    ("image not http", {"imageUrl": "javascript:alert(1)"}),
    ("stock as string", {"totalStock": "10"}),
    ("stock as float", {"totalStock": 1.5}),
    ("stock as bool", {"totalStock": True}),
    ("price as string", {"priceCents": "100"}),
    ("name as number", {"name": 42}),
    ("null name", {"name": None}),
    ("missing name", {"name": OMIT}),
    ("missing totalStock", {"totalStock": OMIT}),
    ("missing priceCents", {"priceCents": OMIT}),
]


@pytest.mark.parametrize(("case", "change"), INVALID_CREATES, ids=[c for c, _ in INVALID_CREATES])
async def test_create_rejects_invalid_bodies(
    client: httpx.AsyncClient, container: Container, case: str, change: dict[str, Any]
) -> None:
    admin = await admin_token(client, container)
    body = {k: v for k, v in {**VALID, **change}.items() if v is not OMIT}
    response = await client.post("/api/drops", json=body, headers=auth(admin))
    assert_problem(response, 422, "VALIDATION_ERROR")
    listed = await client.get("/api/drops", params={"status": "all"})
    assert listed.json() == [], case


# --- PATCH --------------------------------------------------------------------


async def test_patch_renames_and_reschedules(
    client: httpx.AsyncClient, container: Container
) -> None:
    admin = await admin_token(client, container)
    drop = await create_drop(client, admin)
    assert drop["status"] == "live"
    renamed = await client.patch(
        f"/api/drops/{drop['id']}", json={"name": "Renamed"}, headers=auth(admin)
    )
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["name"] == "Renamed"
    assert renamed.json()["startsAt"] == drop["startsAt"]
    later = in_future(3600)
    moved = await client.patch(
        f"/api/drops/{drop['id']}", json={"startsAt": z(later)}, headers=auth(admin)
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["status"] == "scheduled"
    assert abs(parse(moved.json()["startsAt"]) - later) < timedelta(milliseconds=2)
    seen = (await client.get(f"/api/drops/{drop['id']}")).json()
    assert (seen["name"], seen["status"]) == ("Renamed", "scheduled")
    await assert_invariant(container, drop["id"])


async def test_cancel_releases_live_holds_at_once(
    client: httpx.AsyncClient, container: Container
) -> None:
    admin = await admin_token(client, container)
    drop = await create_drop(client, admin, totalStock=3)
    user = await signup(client)
    held = await client.post(f"/api/drops/{drop['id']}/reserve", headers=auth(user["accessToken"]))
    assert held.status_code == 201, held.text
    before = (await client.get(f"/api/drops/{drop['id']}")).json()
    assert (before["availableStock"], before["activeReservations"]) == (2, 1)

    cancelled = await client.patch(
        f"/api/drops/{drop['id']}", json={"status": "cancelled"}, headers=auth(admin)
    )
    assert cancelled.status_code == 200, cancelled.text
    view = cancelled.json()
    assert view["status"] == "cancelled"
    assert (view["availableStock"], view["activeReservations"]) == (3, 0)
    await assert_invariant(container, drop["id"])

    hold_id = held.json()["id"]
    bought = await client.post(
        f"/api/reservations/{hold_id}/purchase", headers=auth(user["accessToken"])
    )
    assert_problem(bought, 409, "RESERVATION_CANCELLED")
    gone = await client.delete(f"/api/reservations/{hold_id}", headers=auth(user["accessToken"]))
    assert gone.status_code == 204
    after = (await client.get(f"/api/drops/{drop['id']}")).json()
    assert (after["availableStock"], after["activeReservations"]) == (3, 0)
    await assert_invariant(container, drop["id"])


async def test_cancelled_drop_cannot_be_patched_or_restocked(
    client: httpx.AsyncClient, container: Container
) -> None:
    admin = await admin_token(client, container)
    drop = await create_drop(client, admin)
    url = f"/api/drops/{drop['id']}"
    cancel = await client.patch(url, json={"status": "cancelled"}, headers=auth(admin))
    assert cancel.status_code == 200
    assert_problem(
        await client.patch(url, json={"name": "Again"}, headers=auth(admin)), 409, "INVALID_STATE"
    )
    assert_problem(
        await client.patch(url, json={"status": "cancelled"}, headers=auth(admin)),
        409,
        "INVALID_STATE",
    )
    restock = await client.post(f"{url}/restock", json={"quantity": 1}, headers=auth(admin))
    assert_problem(restock, 409, "INVALID_STATE")
    seen = (await client.get(url)).json()
    assert (seen["name"], seen["totalStock"], seen["status"]) == (drop["name"], 10, "cancelled")


async def test_ended_drop_cannot_be_patched_or_restocked(
    client: httpx.AsyncClient, container: Container
) -> None:
    admin = await admin_token(client, container)
    now = datetime.now(UTC)
    drop = await create_drop(
        client, admin, startsAt=now - timedelta(hours=2), endsAt=now - timedelta(hours=1)
    )
    assert drop["status"] == "ended"
    url = f"/api/drops/{drop['id']}"
    assert_problem(
        await client.patch(url, json={"endsAt": z(in_future(3600))}, headers=auth(admin)),
        409,
        "INVALID_STATE",
    )
    restock = await client.post(f"{url}/restock", json={"quantity": 5}, headers=auth(admin))
    assert_problem(restock, 409, "INVALID_STATE")
    assert (await client.get(url)).json()["totalStock"] == 10


async def test_patch_errors(client: httpx.AsyncClient, container: Container) -> None:
    admin = await admin_token(client, container)
    drop = await create_drop(client, admin, endsAt=in_future(3600))
    url = f"/api/drops/{drop['id']}"
    unknown = await client.patch(
        f"/api/drops/{UNKNOWN_DROP}", json={"name": "x"}, headers=auth(admin)
    )
    assert_problem(unknown, 404, "DROP_NOT_FOUND")
    for body in (
        {"status": "live"},
        {"status": "ended"},
        {"name": ""},
        {"colour": "red"},
        {"startsAt": "2031-01-01T00:00:00"},
        {"startsAt": z(in_future(7200))},  # after the existing endsAt
    ):
        assert_problem(
            await client.patch(url, json=body, headers=auth(admin)), 422, "VALIDATION_ERROR"
        )
    customer = await signup(client)
    forbidden = await client.patch(url, json={"name": "x"}, headers=auth(customer["accessToken"]))
    assert_problem(forbidden, 403, "FORBIDDEN")
    assert_problem(await client.patch(url, json={"name": "x"}), 401, "UNAUTHORIZED")
    assert (await client.get(url)).json() == drop


# --- restock ------------------------------------------------------------------


async def test_restock_adds_units(client: httpx.AsyncClient, container: Container) -> None:
    admin = await admin_token(client, container)
    drop = await create_drop(client, admin, totalStock=4)
    url = f"/api/drops/{drop['id']}/restock"
    for quantity, total in ((1, 5), (1_000_000, 1_000_005)):
        response = await client.post(url, json={"quantity": quantity}, headers=auth(admin))
        assert response.status_code == 200, response.text
        view = response.json()
        assert (view["totalStock"], view["availableStock"]) == (total, total)
        await assert_invariant(container, drop["id"])


@pytest.mark.parametrize("quantity", [0, -1, 1_000_001, "5", 1.5, True, None])
async def test_restock_rejects_bad_quantities(
    client: httpx.AsyncClient, container: Container, quantity: object
) -> None:
    admin = await admin_token(client, container)
    drop = await create_drop(client, admin, totalStock=4)
    response = await client.post(
        f"/api/drops/{drop['id']}/restock", json={"quantity": quantity}, headers=auth(admin)
    )
    assert_problem(response, 422, "VALIDATION_ERROR")
    assert (await client.get(f"/api/drops/{drop['id']}")).json()["totalStock"] == 4
    await assert_invariant(container, drop["id"])


async def test_restock_errors(client: httpx.AsyncClient, container: Container) -> None:
    admin = await admin_token(client, container)
    unknown = await client.post(
        f"/api/drops/{UNKNOWN_DROP}/restock", json={"quantity": 1}, headers=auth(admin)
    )
    assert_problem(unknown, 404, "DROP_NOT_FOUND")
    drop = await create_drop(client, admin)
    customer = await signup(client)
    url = f"/api/drops/{drop['id']}/restock"
    forbidden = await client.post(url, json={"quantity": 1}, headers=auth(customer["accessToken"]))
    assert_problem(forbidden, 403, "FORBIDDEN")
    assert_problem(await client.post(url, json={"quantity": 1}), 401, "UNAUTHORIZED")
    extra = await client.post(url, json={"quantity": 1, "note": "x"}, headers=auth(admin))
    assert_problem(extra, 422, "VALIDATION_ERROR")
    assert (await client.get(f"/api/drops/{drop['id']}")).json()["totalStock"] == 10


async def test_restocked_sold_out_drop_is_live_again(
    client: httpx.AsyncClient, container: Container
) -> None:
    admin = await admin_token(client, container)
    drop = await create_drop(client, admin, totalStock=1)
    user = await signup(client)
    held = await client.post(f"/api/drops/{drop['id']}/reserve", headers=auth(user["accessToken"]))
    assert held.status_code == 201, held.text
    bought = await client.post(
        f"/api/reservations/{held.json()['id']}/purchase", headers=auth(user["accessToken"])
    )
    assert bought.status_code == 201, bought.text
    assert (await client.get(f"/api/drops/{drop['id']}")).json()["status"] == "sold_out"
    await assert_invariant(container, drop["id"])
    restocked = await client.post(
        f"/api/drops/{drop['id']}/restock", json={"quantity": 2}, headers=auth(admin)
    )
    assert restocked.status_code == 200, restocked.text
    view = restocked.json()
    assert (view["status"], view["totalStock"], view["availableStock"]) == ("live", 3, 2)
    await assert_invariant(container, drop["id"])
    other = await signup(client)
    again = await client.post(
        f"/api/drops/{drop['id']}/reserve", headers=auth(other["accessToken"])
    )
    assert again.status_code == 201, again.text
    await assert_invariant(container, drop["id"])
