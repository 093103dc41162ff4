"""Ordinary bad input is a 4xx problem, never a 5xx.

Malformed ids in a path (a trailing newline, a control character, the wrong length)
are 404 with the route's resource code on every route that takes an id, on both
reserve entry points (the fast path and the Idempotency-Key route); dates whose UTC
value falls outside the representable range are 422.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
import pytest

from app.container import Container
from tests.support.factories import admin_token, auth, create_drop, signup

DROP = "0123456789abcdef"
RESERVATION = f"{DROP}.0123456789abcdef.0123456789abcdef"


def malformed(valid: str) -> dict[str, str]:
    """Variants of a well-formed id that must never reach a store as an id."""
    return {
        "trailing-newline": valid + "\n",
        "trailing-crlf": valid + "\r\n",
        "inner-control": valid[:4] + "\x01" + valid[5:],
        "tab": valid[:-1] + "\t",
        "nul": valid + "\x00",
        "too-long": valid + "0",
        "too-short": valid[:-1],
        "very-long": valid * 40,
    }


def path_id(value: str) -> str:
    return quote(value, safe="")


def assert_problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code


@pytest.fixture
async def tokens(client: httpx.AsyncClient, container: Container) -> dict[str, Any]:
    admin = await admin_token(client, container)
    user = await signup(client)
    drop = await create_drop(client, admin)
    return {"admin": admin, "user": user["accessToken"], "drop": drop["id"]}


DROP_CASES = malformed(DROP)
RESERVATION_CASES = malformed(RESERVATION)


@pytest.mark.parametrize("case", sorted(DROP_CASES))
async def test_malformed_drop_ids_are_404_on_every_drop_route(
    client: httpx.AsyncClient, tokens: dict[str, Any], case: str
) -> None:
    bad = path_id(DROP_CASES[case])
    admin, user = auth(tokens["admin"]), auth(tokens["user"])
    calls: list[tuple[str, str, dict[str, str], Any]] = [
        ("GET", f"/api/drops/{bad}", {}, None),
        ("PATCH", f"/api/drops/{bad}", admin, {"name": "renamed"}),
        ("POST", f"/api/drops/{bad}/restock", admin, {"quantity": 1}),
        ("POST", f"/api/drops/{bad}/restock", {**admin, "Idempotency-Key": "r1"}, {"quantity": 1}),
        ("POST", f"/api/drops/{bad}/reserve", user, None),
        ("POST", f"/api/drops/{bad}/reserve", {**user, "Idempotency-Key": "k1"}, None),
    ]
    for method, url, headers, body in calls:
        response = await client.request(method, url, headers=headers, json=body)
        assert_problem(response, 404, "DROP_NOT_FOUND")


@pytest.mark.parametrize("case", sorted(DROP_CASES))
async def test_an_existing_drops_id_with_junk_is_404(
    client: httpx.AsyncClient, tokens: dict[str, Any], case: str
) -> None:
    """The real id plus a newline must not reach the drop behind it either."""
    real = tokens["drop"]
    bad = path_id(malformed(real)[case])
    user = auth(tokens["user"])
    for headers in (user, {**user, "Idempotency-Key": "k2"}):
        response = await client.post(f"/api/drops/{bad}/reserve", headers=headers)
        assert_problem(response, 404, "DROP_NOT_FOUND")
    assert_problem(await client.get(f"/api/drops/{bad}"), 404, "DROP_NOT_FOUND")
    view = (await client.get(f"/api/drops/{real}")).json()
    assert view["activeReservations"] == 0


@pytest.mark.parametrize("case", sorted(RESERVATION_CASES))
async def test_malformed_reservation_ids_are_404_on_every_hold_route(
    client: httpx.AsyncClient, tokens: dict[str, Any], case: str
) -> None:
    bad = path_id(RESERVATION_CASES[case])
    user = auth(tokens["user"])
    calls: list[tuple[str, str, dict[str, str]]] = [
        ("POST", f"/api/reservations/{bad}/purchase", user),
        ("POST", f"/api/reservations/{bad}/purchase", {**user, "Idempotency-Key": "p1"}),
        ("POST", f"/api/drops/{bad}/purchase", user),
        ("POST", f"/api/drops/{bad}/purchase", {**user, "Idempotency-Key": "p2"}),
        ("DELETE", f"/api/reservations/{bad}", user),
    ]
    for method, url, headers in calls:
        response = await client.request(method, url, headers=headers)
        assert_problem(response, 404, "RESERVATION_NOT_FOUND")


async def test_a_real_holds_id_with_a_newline_is_404(
    client: httpx.AsyncClient, tokens: dict[str, Any]
) -> None:
    user = auth(tokens["user"])
    held = await client.post(f"/api/drops/{tokens['drop']}/reserve", headers=user)
    assert held.status_code == 201, held.text
    bad = path_id(held.json()["id"] + "\n")
    for url in (f"/api/reservations/{bad}/purchase", f"/api/drops/{bad}/purchase"):
        assert_problem(await client.post(url, headers=user), 404, "RESERVATION_NOT_FOUND")
    response = await client.delete(f"/api/reservations/{bad}", headers=user)
    assert_problem(response, 404, "RESERVATION_NOT_FOUND")
    mine = (await client.get("/api/me/reservations", headers=user)).json()
    assert [r["status"] for r in mine] == ["ACTIVE"]


# --- dates ----------------------------------------------------------------------

OUT_OF_RANGE = ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"]


@pytest.mark.parametrize("when", OUT_OF_RANGE)
@pytest.mark.parametrize("field", ["startsAt", "endsAt"])
async def test_dates_beyond_the_range_are_422_on_create_and_patch(
    client: httpx.AsyncClient, tokens: dict[str, Any], field: str, when: str
) -> None:
    admin = auth(tokens["admin"])
    body = {"name": "Edge", "priceCents": 100, "totalStock": 1, field: when}
    created = await client.post("/api/drops", json=body, headers=admin)
    assert_problem(created, 422, "VALIDATION_ERROR")
    assert field in created.json()["detail"]
    patched = await client.patch(f"/api/drops/{tokens['drop']}", json={field: when}, headers=admin)
    assert_problem(patched, 422, "VALIDATION_ERROR")


async def test_the_extremes_inside_the_range_are_not_5xx(
    client: httpx.AsyncClient, tokens: dict[str, Any]
) -> None:
    """The first and last representable instants: an answer, never a crash."""
    admin = auth(tokens["admin"])
    body = {
        "name": "Edge",
        "priceCents": 100,
        "totalStock": 1,
        "startsAt": "0001-01-01T00:00:00Z",
        "endsAt": "9999-12-31T23:59:59Z",
    }
    created = await client.post("/api/drops", json=body, headers=admin)
    assert created.status_code == 201, created.text
    drop = created.json()
    assert drop["startsAt"].startswith("0001-01-01T00:00:00")
    assert drop["endsAt"].startswith("9999-12-31T23:59:59")
    held = await client.post(f"/api/drops/{drop['id']}/reserve", headers=auth(tokens["user"]))
    assert held.status_code == 201, held.text
    listed = await client.get("/api/drops")
    assert listed.status_code == 200
