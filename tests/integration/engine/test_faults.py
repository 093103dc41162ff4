"""Crashes between the purchase steps, PostgreSQL down, Redis emptied mid-burst."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter

import pytest
from sqlalchemy import func, select

from app.container import Container
from app.db.models import Purchase, PurchaseClaim
from app.db.session import Database
from app.store import keys
from tests.integration.engine.helpers import (
    AppFactory,
    available,
    background_of,
    purchase,
    reserve,
    users,
    wait_until,
)
from tests.support.factories import admin_token, assert_invariant, auth, create_drop

FAST_SWEEP = {"purchase_claim_timeout_seconds": 2, "sweep_interval_ms": 100}


class Crash(Exception):
    """Stands for the process dying at a point of the purchase."""


def crash_at(point: str):  # type: ignore[no-untyped-def]
    async def hook(reached: str) -> None:
        if reached == point:
            raise Crash(point)

    return hook


async def purchase_rows(container: Container, reservation_id: str) -> int:
    async with container.db.begin() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(Purchase)
            .where(Purchase.reservation_id == reservation_id)
        )
    return int(count or 0)


async def hold_state(container: Container, reservation_id: str) -> str | None:
    ref = keys.parse_hold_id(reservation_id)
    assert ref is not None
    entry = await container.redis.hget(keys.DropKeys(ref.drop_id).holds, reservation_id)  # type: ignore[misc]
    return None if entry is None else str(entry).split("|", 1)[0]


async def test_crash_after_claim_is_voided_and_the_hold_stays_purchasable(
    make_app: AppFactory,
) -> None:
    client, container = await make_app(**FAST_SWEEP)
    admin = await admin_token(client, container)
    drop = await create_drop(client, admin, totalStock=3)
    (user,) = await users(container, 1)
    held = (await reserve(client, drop["id"], user.access_token)).json()
    container.hold_service.fault_hook = crash_at("after_claim")

    with pytest.raises(Crash):
        await container.hold_service.purchase(user.user.id, held["id"], "buyer")
    container.hold_service.fault_hook = None
    assert await hold_state(container, held["id"]) == "PURCHASING"

    # Past the claim deadline the sweeper asks PostgreSQL: no purchase, so that attempt is
    # voided there, and the hold is ACTIVE again with its own deadline, its unit still held.
    await wait_until(
        lambda: _state_is(container, held["id"], "ACTIVE"), within=6, what="claim settled"
    )
    assert await purchase_rows(container, held["id"]) == 0
    assert await available(container, drop["id"]) == 2
    async with container.db.begin() as session:
        voided = await session.scalar(
            select(func.count())
            .select_from(PurchaseClaim)
            .where(PurchaseClaim.reservation_id == held["id"], PurchaseClaim.outcome == "voided")
        )
    assert voided == 1
    retry = await purchase(client, held["id"], user.access_token)
    assert retry.status_code == 201, retry.text
    assert await purchase_rows(container, held["id"]) == 1
    await assert_invariant(container, drop["id"])


@pytest.mark.parametrize(("point", "status"), [("after_claim", 201), ("after_record", 200)])
async def test_retry_after_a_crash_continues_the_attempt_at_once(
    make_app: AppFactory, point: str, status: int
) -> None:
    client, container = await make_app()  # the claim timeout is 30 s: no sweeper involved
    admin = await admin_token(client, container)
    drop = await create_drop(client, admin, totalStock=3)
    (user,) = await users(container, 1)
    held = (await reserve(client, drop["id"], user.access_token)).json()
    container.hold_service.fault_hook = crash_at(point)
    with pytest.raises(Crash):
        await container.hold_service.purchase(user.user.id, held["id"], "buyer")
    container.hold_service.fault_hook = None
    assert await hold_state(container, held["id"]) == "PURCHASING"
    written = await _row_id(container, held["id"])
    assert (written is None) == (point == "after_claim")

    retry = await purchase(client, held["id"], user.access_token)
    assert retry.status_code == status, retry.text
    assert written is None or retry.json()["id"] == written
    assert await purchase_rows(container, held["id"]) == 1
    assert await hold_state(container, held["id"]) is None  # committed in Redis
    await assert_invariant(container, drop["id"])


async def test_crash_after_record_is_committed_by_the_sweeper(make_app: AppFactory) -> None:
    client, container = await make_app(**FAST_SWEEP)
    admin = await admin_token(client, container)
    drop = await create_drop(client, admin, totalStock=3)
    (user,) = await users(container, 1)
    held = (await reserve(client, drop["id"], user.access_token)).json()
    container.hold_service.fault_hook = crash_at("after_record")

    with pytest.raises(Crash):
        await container.hold_service.purchase(user.user.id, held["id"], "buyer")
    container.hold_service.fault_hook = None
    assert await purchase_rows(container, held["id"]) == 1
    assert await hold_state(container, held["id"]) == "PURCHASING"

    await wait_until(lambda: _gone(container, held["id"]), within=6, what="claim settled")
    assert await purchase_rows(container, held["id"]) == 1
    view = (await client.get(f"/api/drops/{drop['id']}")).json()
    assert (view["availableStock"], view["activeReservations"]) == (2, 0)
    again = await purchase(client, held["id"], user.access_token)
    assert again.status_code == 200
    await assert_invariant(container, drop["id"])


async def test_postgres_down_during_purchase_gives_503_and_keeps_the_hold(
    make_app: AppFactory,
) -> None:
    client, container = await make_app()
    admin = await admin_token(client, container)
    drop = await create_drop(client, admin, totalStock=2)
    (user,) = await users(container, 1)
    held = (await reserve(client, drop["id"], user.access_token)).json()
    healthy = container.hold_service.db
    container.hold_service.db = Database(
        f"postgresql+asyncpg://postgres@127.0.0.1:{_closed_port()}/x"
    )
    try:
        failed = await purchase(client, held["id"], user.access_token)
    finally:
        await container.hold_service.db.dispose()
        container.hold_service.db = healthy

    assert failed.status_code == 503
    assert failed.json()["code"] == "SERVICE_UNAVAILABLE"
    assert await hold_state(container, held["id"]) == "ACTIVE"
    mine = await client.get("/api/me/reservations", headers=auth(user.access_token))
    assert [r["id"] for r in mine.json()] == [held["id"]]
    assert await available(container, drop["id"]) == 1

    retry = await purchase(client, held["id"], user.access_token)
    assert retry.status_code == 201
    assert await purchase_rows(container, held["id"]) == 1
    await assert_invariant(container, drop["id"])


async def test_redis_emptied_mid_burst_is_rebuilt_without_overselling(make_app: AppFactory) -> None:
    client, container = await make_app()
    admin = await admin_token(client, container)
    drop = await create_drop(client, admin, totalStock=60)
    crowd = await users(container, 150)
    done = 0
    emptied = asyncio.Event()
    halfway = asyncio.Event()

    async def shopper(token: str) -> list[int]:
        nonlocal done
        held = await reserve(client, drop["id"], token)
        codes = [held.status_code]
        if held.status_code == 201:
            codes.append((await purchase(client, held.json()["id"], token)).status_code)
        done += 1
        if done == 40:
            halfway.set()
        return codes

    async def empty_redis() -> None:
        await halfway.wait()
        # Redis restarts empty while the burst goes on: data and script cache gone.
        await container.redis.flushall()
        await container.redis.script_flush()
        emptied.set()

    results = await asyncio.gather(empty_redis(), *(shopper(s.access_token) for s in crowd))
    assert emptied.is_set()
    await background_of(client).reconciler.run_once()

    statuses = Counter(code for codes in results[1:] for code in codes)  # type: ignore[union-attr]
    assert not any(code >= 500 and code != 503 for code in statuses), statuses
    async with container.db.begin() as session:
        sold = await session.scalar(
            select(func.count()).select_from(Purchase).where(Purchase.drop_id == drop["id"])
        )
    assert sold is not None
    assert sold <= 60, statuses  # never a unit sold twice
    view = (await client.get(f"/api/drops/{drop['id']}")).json()
    assert view["availableStock"] + view["activeReservations"] + sold == 60
    await assert_invariant(container, drop["id"])


async def _gone(container: Container, reservation_id: str) -> bool:
    return await hold_state(container, reservation_id) is None


async def _state_is(container: Container, reservation_id: str, state: str) -> bool:
    return await hold_state(container, reservation_id) == state


async def _row_id(container: Container, reservation_id: str) -> str | None:
    async with container.db.begin() as session:
        return await session.scalar(
            select(Purchase.id).where(Purchase.reservation_id == reservation_id)
        )


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
