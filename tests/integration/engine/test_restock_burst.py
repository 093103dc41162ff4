"""A restock that lands in the middle of a reserve burst: every unit is held exactly once."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import httpx
import pytest

from app.container import Container
from tests.integration.engine.helpers import reserve, users
from tests.support.factories import admin_token, assert_invariant, auth, create_drop
from tests.support.faults import sneakerdrop_check
from tests.support.stores import StoreUrls

STOCK = 100
RESTOCK = 50
SHOPPERS = 400  # distinct users, one reserve each
CONNECTIONS = 16  # reserves in flight at once, as from a pool of client connections
FIRST = 30  # holds taken before the admin sends the restock
BEFORE_REDIS = 5  # more holds taken while the restock is under way, before its Redis step


async def test_restock_mid_burst_gives_exactly_the_new_total(
    client: httpx.AsyncClient,
    container: Container,
    monkeypatch: pytest.MonkeyPatch,
    stores: StoreUrls,
    tmp_path: Path,
) -> None:
    """The first shoppers take 30 units; the admin's restock goes out and the rest of the
    crowd arrives while it is applied. In process, a burst outruns the restock's
    PostgreSQL transaction, so its Redis step (restock.lua) is held until five more units
    were taken: it then lands while units are left and reserves are in flight, and a
    restock that lost an update racing them would show."""
    admin = await admin_token(client, container)
    drop = await create_drop(client, admin, totalStock=STOCK, perUserLimit=1)
    crowd = await users(container, SHOPPERS)
    gate = asyncio.Semaphore(CONNECTIONS)
    granted = in_flight = 0
    crowd_arrives = asyncio.Event()
    sale_went_on = asyncio.Event()
    landed: list[tuple[int | None, int, int]] = []  # (available after, granted, in flight)

    async def shopper(token: str, first: bool) -> httpx.Response:
        nonlocal granted, in_flight
        if not first:
            await crowd_arrives.wait()
        async with gate:
            in_flight += 1
            response = await reserve(client, drop["id"], token)
            in_flight -= 1
        if response.status_code == 201:
            granted += 1
            if granted == FIRST + BEFORE_REDIS:
                sale_went_on.set()
        return response

    redis_restock = container.drop_store.restock

    async def restock_mid_sale(drop_id: str, quantity: int, size: str | None) -> int | None:
        """PostgreSQL's total is raised: the crowd arrives, and the Redis step follows
        once the sale has gone on."""
        crowd_arrives.set()
        await sale_went_on.wait()
        seen = (granted, in_flight)
        available = await redis_restock(drop_id, quantity, size)
        landed.append((available, *seen))
        return available

    monkeypatch.setattr(container.drop_store, "restock", restock_mid_sale)

    first = await asyncio.gather(*(shopper(s.access_token, True) for s in crowd[:FIRST]))
    assert [r.status_code for r in first] == [201] * FIRST
    restocked, *rest = await asyncio.gather(
        client.post(
            f"/api/drops/{drop['id']}/restock", json={"quantity": RESTOCK}, headers=auth(admin)
        ),
        *(shopper(s.access_token, False) for s in crowd[FIRST:]),
    )

    assert restocked.status_code == 200, restocked.text
    assert restocked.json()["totalStock"] == STOCK + RESTOCK
    ((available_after, granted_before, in_flight_then),) = landed
    print(
        f"restock.lua ran after {granted_before} holds with {in_flight_then} reserves in "
        f"flight; available after it: {available_after}"
    )
    # Mid-sale: units were left (more than the restock's own) and reserves were in flight.
    assert available_after is not None
    assert available_after > RESTOCK, landed
    assert in_flight_then > 0, landed
    responses = [*first, *rest]
    codes = Counter(r.status_code if r.status_code == 201 else r.json()["code"] for r in responses)
    assert codes == {201: STOCK + RESTOCK, "SOLD_OUT": SHOPPERS - STOCK - RESTOCK}, codes
    holders = {r.json()["id"].split(".")[1] for r in responses if r.status_code == 201}
    assert len(holders) == STOCK + RESTOCK  # one hold per user
    view = (await client.get(f"/api/drops/{drop['id']}")).json()
    assert (view["totalStock"], view["availableStock"], view["activeReservations"]) == (
        STOCK + RESTOCK,
        0,
        STOCK + RESTOCK,
    )
    await assert_invariant(container, drop["id"])
    await sneakerdrop_check(stores, tmp_path / "data")
