"""The reserve cooldown through the API: 409 COOLDOWN with Retry-After, and OAT-021.

A holder who cancels (or lets a hold expire) may not reserve in that drop again for
RESERVE_COOLDOWN_SECONDS, so a cancel and re-reserve loop cannot keep a unit from
everyone else (OWASP OAT-021, denial of inventory).
"""

from __future__ import annotations

import httpx
import pytest

from app.container import Container
from tests.integration.engine.helpers import (
    AppFactory,
    past_redis_start,
    reserve,
    stock_is,
    users,
    wait_until,
)
from tests.support.factories import admin_token, assert_invariant, auth, create_drop


async def _drop(client: httpx.AsyncClient, container: Container, **fields: object) -> str:
    admin = await admin_token(client, container)
    return str((await create_drop(client, admin, **fields))["id"])


async def _cancel(client: httpx.AsyncClient, reservation_id: str, token: str) -> None:
    cancelled = await client.delete(f"/api/reservations/{reservation_id}", headers=auth(token))
    assert cancelled.status_code == 204, cancelled.text


def _assert_cooldown(answer: httpx.Response, cooldown_seconds: int) -> None:
    assert answer.status_code == 409, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["code"] == "COOLDOWN"
    assert 1 <= int(answer.headers["retry-after"]) <= cooldown_seconds


@pytest.mark.parametrize("keyed", [False, True], ids=["fast-path", "idempotency-key"])
async def test_reserve_after_a_cancel_is_cooldown_with_retry_after(
    client: httpx.AsyncClient, container: Container, keyed: bool
) -> None:
    """Both entry points: the lean ASGI route (no key) and FastAPI's keyed route."""
    assert container.settings.reserve_cooldown_seconds == 10  # the default
    drop_id = await _drop(client, container, totalStock=3, perUserLimit=2)
    (user,) = await users(container, 1)
    held = await reserve(client, drop_id, user.access_token)
    await _cancel(client, held.json()["id"], user.access_token)

    headers = auth(user.access_token)
    if keyed:
        headers["Idempotency-Key"] = "again-1"
    again = await client.post(f"/api/drops/{drop_id}/reserve", headers=headers)

    _assert_cooldown(again, 10)
    assert await stock_is(container, drop_id, 3)
    await assert_invariant(container, drop_id)


async def test_the_cooldown_comes_from_the_settings(make_app: AppFactory) -> None:
    client, container = await make_app(reserve_cooldown_seconds=2)
    drop_id = await _drop(client, container, totalStock=2)
    (user,) = await users(container, 1)
    held = await reserve(client, drop_id, user.access_token)
    await _cancel(client, held.json()["id"], user.access_token)
    _assert_cooldown(await reserve(client, drop_id, user.access_token), 2)
    await assert_invariant(container, drop_id)


async def test_cooldown_zero_lets_the_holder_reserve_again_at_once(make_app: AppFactory) -> None:
    client, container = await make_app(reserve_cooldown_seconds=0)
    drop_id = await _drop(client, container, totalStock=1)
    (user,) = await users(container, 1)
    held = await reserve(client, drop_id, user.access_token)
    await _cancel(client, held.json()["id"], user.access_token)
    assert (await reserve(client, drop_id, user.access_token)).status_code == 201
    await assert_invariant(container, drop_id)


async def test_an_expired_hold_cools_down_its_holder(make_app: AppFactory) -> None:
    """The expiry layers (listener, sweeper) arm it too, from the app's settings."""
    client, container = await make_app(reservation_ttl_seconds=1, sweep_interval_ms=100)
    await past_redis_start(container)
    drop_id = await _drop(client, container, totalStock=1)
    holder, other = await users(container, 2)
    assert (await reserve(client, drop_id, holder.access_token)).status_code == 201
    await wait_until(lambda: stock_is(container, drop_id, 1), within=10, what="expiry")

    _assert_cooldown(await reserve(client, drop_id, holder.access_token), 10)
    assert (await reserve(client, drop_id, other.access_token)).status_code == 201
    await assert_invariant(container, drop_id)


async def test_oat_021_a_cancel_and_re_reserve_loop_cannot_keep_the_unit(
    client: httpx.AsyncClient, container: Container
) -> None:
    """The holder of a 1-unit drop cancels and re-reserves at once, round after round (the
    hoarder is always first: its re-reserve leaves right after its cancel), while another
    user keeps asking in between. Without the cooldown the hoarder gets the unit back every
    round and the other user only ever hears SOLD_OUT."""
    drop_id = await _drop(client, container, totalStock=1, perUserLimit=1)
    hoarder, shopper = await users(container, 2)
    held = await reserve(client, drop_id, hoarder.access_token)
    assert held.status_code == 201
    hoarder_answers: list[str] = []
    shopper_got = None
    for _ in range(5):
        if held.status_code != 201:
            break
        await _cancel(client, held.json()["id"], hoarder.access_token)
        held = await reserve(client, drop_id, hoarder.access_token)
        hoarder_answers.append(held.json().get("code", "OK"))
        attempt = await reserve(client, drop_id, shopper.access_token)
        if attempt.status_code == 201:
            shopper_got = attempt.json()["id"]
            break
        assert attempt.json()["code"] == "SOLD_OUT"

    assert hoarder_answers == ["COOLDOWN"]
    assert shopper_got is not None
    mine = await client.get("/api/me/reservations", headers=auth(shopper.access_token))
    assert [r["id"] for r in mine.json()] == [shopper_got]
    # The hoarder still hears COOLDOWN (not SOLD_OUT) while it runs.
    _assert_cooldown(await reserve(client, drop_id, hoarder.access_token), 10)
    await assert_invariant(container, drop_id)


async def test_the_reserve_route_documents_cooldown(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    conflicts = schema["paths"]["/api/drops/{drop_id}/reserve"]["post"]["responses"]["409"]
    assert "COOLDOWN" in conflicts["description"].split(" | ")
