"""An Idempotency-Key's running request holds a lease: renewed while it runs, gone soon after
its process dies, so a retry with the same key runs within seconds, not after 30 s."""

from __future__ import annotations

import asyncio
import hashlib
import time

import pytest

from app.store.idempotency import LEASE_MS, IdempotencyStore
from tests.integration.engine.helpers import AppFactory, reserve, users
from tests.support.factories import admin_token, assert_invariant, auth, create_drop

KEY = "buy-once-7f3a"


class Crash(Exception):
    """Stands for the process dying at a point of the purchase."""


def _record_key(user_id: str, reservation_id: str) -> str:
    scope = f"POST /api/reservations/{reservation_id}/purchase {KEY}"
    return IdempotencyStore.key(user_id, hashlib.sha256(scope.encode()).hexdigest())


async def test_a_key_whose_first_request_died_is_taken_over_within_the_lease(
    make_app: AppFactory,
) -> None:
    client, container = await make_app()
    admin = await admin_token(client, container)
    drop = await create_drop(client, admin, totalStock=2)
    (user,) = await users(container, 1)
    held = (await reserve(client, drop["id"], user.access_token)).json()

    # The first request claimed the hold and its key, then its process died: no cleanup ran.
    async def crash(point: str) -> None:
        raise Crash(point)

    container.hold_service.fault_hook = crash
    with pytest.raises(Crash):
        await container.hold_service.purchase(user.user.id, held["id"], "buyer")
    container.hold_service.fault_hook = None
    store = container.idempotency_store
    assert await store.claim(_record_key(user.user.id, held["id"]), hashlib.sha256(b"").hexdigest())

    started = time.monotonic()
    retry = await client.post(
        f"/api/reservations/{held['id']}/purchase",
        headers={**auth(user.access_token), "Idempotency-Key": KEY},
    )
    waited = time.monotonic() - started
    assert retry.status_code == 201, retry.text
    assert waited <= LEASE_MS / 1000 + 1, f"the retry waited {waited:.1f} s"
    await assert_invariant(container, drop["id"])


async def test_a_running_first_request_keeps_its_key_past_the_lease(make_app: AppFactory) -> None:
    client, container = await make_app()
    admin = await admin_token(client, container)
    drop = await create_drop(client, admin, totalStock=2)
    (user,) = await users(container, 1)
    held = (await reserve(client, drop["id"], user.access_token)).json()
    reached, go_on = asyncio.Event(), asyncio.Event()

    async def stall(point: str) -> None:
        if point == "after_claim":
            reached.set()
            await go_on.wait()

    container.hold_service.fault_hook = stall
    url = f"/api/reservations/{held['id']}/purchase"
    headers = {**auth(user.access_token), "Idempotency-Key": KEY}
    first = asyncio.create_task(client.post(url, headers=headers))
    await reached.wait()
    # Time itself is what is tested: the first request outlives its initial lease.
    await asyncio.sleep(LEASE_MS / 1000 * 1.5)
    second = asyncio.create_task(client.post(url, headers=headers))
    done, _ = await asyncio.wait({second}, timeout=LEASE_MS / 1000)
    assert not done, "the repeat ran beside a first request that was still running"
    go_on.set()
    container.hold_service.fault_hook = None
    answer, repeat = await first, await second
    assert answer.status_code == 201, answer.text
    assert repeat.status_code == 201
    assert repeat.headers["idempotent-replayed"] == "true"
    assert repeat.content == answer.content
    await assert_invariant(container, drop["id"])
