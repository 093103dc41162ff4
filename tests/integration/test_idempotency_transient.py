"""Idempotency keeps only final outcomes: a 429, a COOLDOWN or a 5xx under a key is not replayed.

A client told `Retry-After` (429, 409 COOLDOWN) or hit by a store fault (503) retries
with the same key, as it should; that retry must run again, not get the refusal back
for 24 h.
"""

from __future__ import annotations

import asyncio
import socket

import httpx

from app.db.session import Database
from tests.conftest import AppFactory
from tests.support.factories import admin_token, assert_invariant, auth, create_drop, signup


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_a_429_under_a_key_is_not_replayed_after_retry_after(
    make_app: AppFactory,
) -> None:
    client, container = await make_app(rate_limits="on", rate_limit_reserve="1/second")
    admin = await admin_token(client, container)
    drop = await create_drop(client, admin, totalStock=5, perUserLimit=5)
    user = auth((await signup(client))["accessToken"])
    url = f"/api/drops/{drop['id']}/reserve"

    # Keys used once each until one lands in a window already spent (1 a second).
    limited: httpx.Response | None = None
    for attempt in range(5):
        response = await client.post(url, headers={**user, "Idempotency-Key": f"k{attempt}"})
        if response.status_code == 429:
            limited, key = response, f"k{attempt}"
            break
        assert response.status_code == 201, response.text
    assert limited is not None, "no 429 at 1 reserve a second"
    assert limited.json()["code"] == "RATE_LIMITED"
    retry_after = int(limited.headers["Retry-After"])
    assert retry_after == 1

    await asyncio.sleep(retry_after)  # what the client was told to do
    again = await client.post(url, headers={**user, "Idempotency-Key": key})
    assert again.status_code == 201, again.text
    assert "idempotent-replayed" not in again.headers
    # The success is final: from now on the key replays it.
    replay = await client.post(url, headers={**user, "Idempotency-Key": key})
    assert replay.status_code == 201
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.content == again.content
    await assert_invariant(container, drop["id"])


async def test_a_cooldown_under_a_key_is_not_replayed_after_retry_after(
    make_app: AppFactory,
) -> None:
    client, container = await make_app(reserve_cooldown_seconds=1)
    admin = await admin_token(client, container)
    drop = await create_drop(client, admin, totalStock=1)
    user = auth((await signup(client))["accessToken"])
    url = f"/api/drops/{drop['id']}/reserve"
    held = await client.post(url, headers=user)
    assert held.status_code == 201, held.text
    cancelled = await client.delete(f"/api/reservations/{held.json()['id']}", headers=user)
    assert cancelled.status_code == 204

    keyed = {**user, "Idempotency-Key": "after-cancel"}
    refused = await client.post(url, headers=keyed)
    assert refused.status_code == 409, refused.text
    assert refused.json()["code"] == "COOLDOWN"
    await asyncio.sleep(int(refused.headers["Retry-After"]))  # what the client was told to do
    again = await client.post(url, headers=keyed)
    assert again.status_code == 201, again.text
    assert "idempotent-replayed" not in again.headers
    await assert_invariant(container, drop["id"])


async def test_a_503_under_a_key_is_not_replayed(make_app: AppFactory) -> None:
    client, container = await make_app()
    admin = await admin_token(client, container)
    drop = await create_drop(client, admin, totalStock=2)
    user = auth((await signup(client))["accessToken"])
    held = await client.post(f"/api/drops/{drop['id']}/reserve", headers=user)
    assert held.status_code == 201, held.text
    url = f"/api/reservations/{held.json()['id']}/purchase"
    keyed = {**user, "Idempotency-Key": "buy-once"}

    healthy = container.hold_service.db
    container.hold_service.db = Database(
        f"postgresql+asyncpg://postgres@127.0.0.1:{closed_port()}/x"
    )
    try:
        failed = await client.post(url, headers=keyed)
    finally:
        await container.hold_service.db.dispose()
        container.hold_service.db = healthy
    assert failed.status_code == 503, failed.text
    assert failed.json()["code"] == "SERVICE_UNAVAILABLE"

    retry = await client.post(url, headers=keyed)
    assert retry.status_code == 201, retry.text
    assert "idempotent-replayed" not in retry.headers
    replay = await client.post(url, headers=keyed)
    assert (replay.status_code, replay.content) == (201, retry.content)
    await assert_invariant(container, drop["id"])
