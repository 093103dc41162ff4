"""PostgreSQL stopped under a wave of purchases, then started again on its port."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import httpx

from app.services.auth import Session
from tests.integration.engine.helpers import AppFactory, purchase, reserve, users, wait_until
from tests.support.drop_lock import DROP_LOCK, waiting_on_lock
from tests.support.factories import admin_token, assert_invariant, auth, create_drop
from tests.support.faults import (
    ANSWER_SECONDS,
    answered,
    assert_unavailable,
    hold_state,
    purchase_counts,
    sneakerdrop_check,
)
from tests.support.owned_stores import OwnedPostgres
from tests.support.stores import StoreUrls, _plain

BUYERS = 20


async def timed_purchase(
    client: httpx.AsyncClient, buyer: Session, reservation_id: str
) -> tuple[httpx.Response, float]:
    return await answered(purchase(client, reservation_id, buyer.access_token))


async def test_postgres_stopped_during_purchases(
    make_app: AppFactory, owned_postgres: OwnedPostgres, stores: StoreUrls, tmp_path: Path
) -> None:
    client, container = await make_app()
    admin = await admin_token(client, container)
    drop = await create_drop(client, admin, totalStock=BUYERS)
    crowd = await users(container, BUYERS)
    holds = {}
    for buyer in crowd:
        held = await reserve(client, drop["id"], buyer.access_token)
        assert held.status_code == 201
        holds[buyer.user.id] = held.json()["id"]
    first, blocked, arriving, late = crowd[:4], crowd[4:10], crowd[10:16], crowd[16:]
    for buyer in first:
        assert (await purchase(client, holds[buyer.user.id], buyer.access_token)).status_code == 201

    # The next purchases reach PostgreSQL while a session holds the drop's exclusive lock
    # (as a rebuild does): they wait inside their sale statements, and PostgreSQL shuts down
    # under them (what `pg_ctl stop -m fast` does: open sessions are cut).
    locker = await asyncpg.connect(_plain(stores.database_url))
    try:
        await locker.execute(DROP_LOCK, drop["id"])
        in_flight = [
            asyncio.create_task(timed_purchase(client, b, holds[b.user.id])) for b in blocked
        ]
        await wait_until(
            lambda: waiting_on_lock(locker, len(blocked)), within=5, what="purchases waiting"
        )
        owned_postgres.begin_fast_shutdown()
        # More purchases arrive while it shuts down ("the database system is shutting down").
        in_flight += [
            asyncio.create_task(timed_purchase(client, b, holds[b.user.id])) for b in arriving
        ]
        during = await asyncio.gather(*in_flight)
    finally:
        locker.terminate()
    await asyncio.to_thread(owned_postgres.stop)
    # Then PostgreSQL is down for good: every purchase is refused fast.
    down = await asyncio.gather(*(timed_purchase(client, b, holds[b.user.id]) for b in late))

    for response, seconds in during + down:
        assert_unavailable(response)
        assert seconds < ANSWER_SECONDS
    # A purchase refused before its statement ran wrote nothing: its hold is ACTIVE again.
    # One whose statement the shutdown cut short (the blocked ones) may have committed, as
    # far as the app can tell: its hold stays PURCHASING, for a retry or the sweeper.
    # Either way the hold is still the buyer's.
    refused = blocked + arriving + late
    for buyer in refused:
        state = await hold_state(container, holds[buyer.user.id])
        if buyer in blocked:
            assert state == "PURCHASING"
        elif buyer in late:
            assert state == "ACTIVE"
        else:
            assert state in ("ACTIVE", "PURCHASING")
        mine = await client.get("/api/me/reservations", headers=auth(buyer.access_token))
        assert [r["id"] for r in mine.json()] == [holds[buyer.user.id]]

    await asyncio.to_thread(owned_postgres.restart)
    retried = await asyncio.gather(
        *(purchase(client, holds[b.user.id], b.access_token) for b in refused)
    )
    for response in retried:
        assert response.status_code == 201, response.text

    # Exactly one purchase per hold, whatever the first attempt's fate.
    rows = await purchase_counts(container, drop["id"])
    assert rows == {reservation_id: 1 for reservation_id in holds.values()}
    for buyer in crowd:  # and every buyer sees that one purchase again on a repeat
        again = await purchase(client, holds[buyer.user.id], buyer.access_token)
        assert again.status_code == 200, again.text
    view = (await client.get(f"/api/drops/{drop['id']}")).json()
    assert (view["availableStock"], view["activeReservations"]) == (0, 0)
    await assert_invariant(container, drop["id"])
    await sneakerdrop_check(stores, tmp_path / "data")
