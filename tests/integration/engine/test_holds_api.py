"""Reserve, cancel and the caller's lists through the HTTP API."""

from __future__ import annotations

import asyncio

import httpx

from app.container import Container
from tests.integration.engine.helpers import AppFactory, purchase, reserve, users
from tests.support.factories import admin_token, assert_invariant, auth, create_drop, in_future


async def _drop_and_user(
    client: httpx.AsyncClient, container: Container, **fields: object
) -> tuple[str, str]:
    admin = await admin_token(client, container)
    drop = await create_drop(client, admin, **fields)
    (user,) = await users(container, 1)
    return str(drop["id"]), user.access_token


async def test_reserve_answers_the_contract_shape(
    client: httpx.AsyncClient, container: Container
) -> None:
    drop_id, token = await _drop_and_user(client, container, totalStock=2)
    held = await reserve(client, drop_id, token)
    assert held.status_code == 201
    body = held.json()
    assert set(body) == {"id", "dropId", "status", "expiresAt", "createdAt", "size"}
    assert body["dropId"] == drop_id
    assert body["status"] == "ACTIVE"
    assert body["expiresAt"].endswith("Z")
    assert body["size"] is None  # a drop without sizes
    await assert_invariant(container, drop_id)


async def test_reserve_refusals(client: httpx.AsyncClient, container: Container) -> None:
    admin = await admin_token(client, container)
    later = await create_drop(client, admin, startsAt=in_future(3600))
    (user,) = await users(container, 1)
    token = user.access_token

    not_live = await reserve(client, later["id"], token)
    assert (not_live.status_code, not_live.json()["code"]) == (409, "DROP_NOT_LIVE")
    unknown = await reserve(client, "0123456789abcdef", token)
    assert (unknown.status_code, unknown.json()["code"]) == (404, "DROP_NOT_FOUND")
    malformed = await reserve(client, "not-an-id", token)
    assert (malformed.status_code, malformed.json()["code"]) == (404, "DROP_NOT_FOUND")
    anonymous = await client.post(f"/api/drops/{later['id']}/reserve")
    assert (anonymous.status_code, anonymous.json()["code"]) == (401, "UNAUTHORIZED")
    with_fields = await client.post(
        f"/api/drops/{later['id']}/reserve", json={"quantity": 2}, headers=auth(token)
    )
    assert (with_fields.status_code, with_fields.json()["code"]) == (422, "VALIDATION_ERROR")
    empty_object = await client.post(
        f"/api/drops/{later['id']}/reserve", json={}, headers=auth(token)
    )
    assert empty_object.json()["code"] == "DROP_NOT_LIVE"
    await assert_invariant(container)


async def test_sold_out_says_so(client: httpx.AsyncClient, container: Container) -> None:
    drop_id, token = await _drop_and_user(client, container, totalStock=1)
    (other,) = await users(container, 1, prefix="other")
    assert (await reserve(client, drop_id, token)).status_code == 201
    late = await reserve(client, drop_id, other.access_token)
    assert late.status_code == 409
    assert late.headers["content-type"] == "application/problem+json"
    assert late.json()["code"] == "SOLD_OUT"
    await assert_invariant(container, drop_id)


async def test_cancel_returns_the_unit_once(
    client: httpx.AsyncClient, container: Container
) -> None:
    drop_id, token = await _drop_and_user(client, container, totalStock=3)
    held = (await reserve(client, drop_id, token)).json()

    first = await client.delete(f"/api/reservations/{held['id']}", headers=auth(token))
    again = await client.delete(f"/api/reservations/{held['id']}", headers=auth(token))

    assert (first.status_code, again.status_code) == (204, 204)
    view = (await client.get(f"/api/drops/{drop_id}")).json()
    assert (view["availableStock"], view["activeReservations"]) == (3, 0)
    bought = await purchase(client, held["id"], token)
    assert (bought.status_code, bought.json()["code"]) == (409, "RESERVATION_CANCELLED")
    await assert_invariant(container, drop_id)


async def test_cancel_of_a_purchased_or_foreign_hold(
    client: httpx.AsyncClient, container: Container
) -> None:
    drop_id, token = await _drop_and_user(client, container, totalStock=3)
    (stranger,) = await users(container, 1, prefix="stranger")
    held = (await reserve(client, drop_id, token)).json()

    foreign = await client.delete(
        f"/api/reservations/{held['id']}", headers=auth(stranger.access_token)
    )
    assert (foreign.status_code, foreign.json()["code"]) == (404, "RESERVATION_NOT_FOUND")
    random_id = await client.delete(
        f"/api/reservations/{drop_id}.{'a' * 16}.{'b' * 16}", headers=auth(token)
    )
    assert random_id.json() == foreign.json()  # indistinguishable from another user's hold
    assert (await purchase(client, held["id"], token)).status_code == 201
    purchased = await client.delete(f"/api/reservations/{held['id']}", headers=auth(token))
    assert (purchased.status_code, purchased.json()["code"]) == (409, "RESERVATION_PURCHASED")
    malformed = await client.delete("/api/reservations/%2e%2e%2fx", headers=auth(token))
    assert malformed.status_code == 404
    await assert_invariant(container, drop_id)


async def test_purchase_of_foreign_or_unknown_hold_is_404(
    client: httpx.AsyncClient, container: Container
) -> None:
    drop_id, token = await _drop_and_user(client, container, totalStock=3)
    (stranger,) = await users(container, 1, prefix="stranger")
    held = (await reserve(client, drop_id, token)).json()
    foreign = await purchase(client, held["id"], stranger.access_token)
    assert (foreign.status_code, foreign.json()["code"]) == (404, "RESERVATION_NOT_FOUND")
    for bad in ("x", "0" * 50, f"{drop_id}.{'0' * 16}.{'0' * 16}"):
        response = await purchase(client, bad, token)
        assert (response.status_code, response.json()["code"]) == (404, "RESERVATION_NOT_FOUND")
    await assert_invariant(container, drop_id)


async def test_my_reservations_and_purchases(
    client: httpx.AsyncClient, container: Container
) -> None:
    admin = await admin_token(client, container)
    drops = [await create_drop(client, admin, totalStock=5) for _ in range(2)]
    (user,) = await users(container, 1)
    token = user.access_token
    first = (await reserve(client, drops[0]["id"], token)).json()
    second = (await reserve(client, drops[1]["id"], token)).json()

    mine = (await client.get("/api/me/reservations", headers=auth(token))).json()
    assert {r["id"] for r in mine} == {first["id"], second["id"]}
    bought = (await purchase(client, first["id"], token)).json()

    mine = (await client.get("/api/me/reservations", headers=auth(token))).json()
    assert [r["id"] for r in mine] == [second["id"]]
    purchases = (await client.get("/api/me/purchases", headers=auth(token))).json()
    assert purchases == [bought]
    assert set(bought) == {
        "id",
        "reservationId",
        "dropId",
        "priceCents",
        "currency",
        "purchasedAt",
        "size",
    }
    assert (await client.get("/api/me/purchases")).status_code == 401
    await assert_invariant(container)


async def test_idempotent_reserve_replays_and_holds_once(
    client: httpx.AsyncClient, container: Container
) -> None:
    drop_id, token = await _drop_and_user(client, container, totalStock=5, perUserLimit=3)
    headers = {**auth(token), "Idempotency-Key": "tap-1"}

    responses = await asyncio.gather(
        *(client.post(f"/api/drops/{drop_id}/reserve", headers=headers) for _ in range(5))
    )

    assert {r.status_code for r in responses} == {201}
    assert len({r.text for r in responses}) == 1
    view = (await client.get(f"/api/drops/{drop_id}")).json()
    assert view["activeReservations"] == 1
    other = await client.post(
        f"/api/drops/{drop_id}/reserve", headers={**auth(token), "Idempotency-Key": "tap-2"}
    )
    assert other.status_code == 201
    assert other.json()["id"] != responses[0].json()["id"]
    await assert_invariant(container, drop_id)


async def test_idempotency_key_reused_with_another_body(
    client: httpx.AsyncClient, container: Container
) -> None:
    drop_id, token = await _drop_and_user(client, container, totalStock=5)
    headers = {**auth(token), "Idempotency-Key": "k"}
    assert (await client.post(f"/api/drops/{drop_id}/reserve", headers=headers)).status_code == 201
    reused = await client.post(f"/api/drops/{drop_id}/reserve", json={}, headers=headers)
    assert (reused.status_code, reused.json()["code"]) == (422, "IDEMPOTENCY_KEY_REUSED")
    await assert_invariant(container, drop_id)


async def test_idempotent_refusal_is_replayed_too(
    client: httpx.AsyncClient, container: Container
) -> None:
    drop_id, token = await _drop_and_user(client, container, totalStock=1)
    (first,) = await users(container, 1, prefix="first")
    assert (await reserve(client, drop_id, first.access_token)).status_code == 201
    headers = {**auth(token), "Idempotency-Key": "sold-out-once"}
    refused = await client.post(f"/api/drops/{drop_id}/reserve", headers=headers)
    assert refused.json()["code"] == "SOLD_OUT"
    await client.delete(
        f"/api/reservations/{(await client.get('/api/me/reservations', headers=auth(first.access_token))).json()[0]['id']}",
        headers=auth(first.access_token),
    )
    replay = await client.post(f"/api/drops/{drop_id}/reserve", headers=headers)
    assert (replay.status_code, replay.text) == (409, refused.text)
    assert replay.headers["idempotent-replayed"] == "true"
    await assert_invariant(container, drop_id)


async def test_reserve_rate_limit(make_app: AppFactory) -> None:
    client, container = await make_app(rate_limits="on", rate_limit_reserve="3/minute")
    drop_id, token = await _drop_and_user(client, container, totalStock=50, perUserLimit=50)
    codes = [(await reserve(client, drop_id, token)).status_code for _ in range(4)]
    assert codes == [201, 201, 201, 429]
    limited = await reserve(client, drop_id, token)
    assert limited.json()["code"] == "RATE_LIMITED"
    assert int(limited.headers["retry-after"]) >= 1
    await assert_invariant(container, drop_id)
