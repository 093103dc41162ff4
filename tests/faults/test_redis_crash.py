"""Redis SIGKILLed mid-burst and restarted empty on its port: 503s, then a rebuild from PostgreSQL."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import httpx

from app.container import Container
from app.services.auth import Session
from tests.integration.engine.helpers import AppFactory, purchase, reserve, users, wait_until
from tests.support.factories import admin_token, assert_invariant, auth, create_drop
from tests.support.faults import (
    answered,
    assert_unavailable,
    buyers,
    purchase_counts,
    sneakerdrop_check,
)
from tests.support.owned_stores import OwnedValkey
from tests.support.stores import StoreUrls

TOTAL = 40


async def shop(client: httpx.AsyncClient, drop_id: str, user: Session) -> list[int]:
    """Reserve, then purchase what was held: the status codes seen, each answered in time."""
    held, _ = await answered(reserve(client, drop_id, user.access_token))
    codes = [held.status_code]
    if held.status_code == 201:
        bought, _ = await answered(purchase(client, held.json()["id"], user.access_token))
        codes.append(bought.status_code)
    return codes


async def probes_while_down(
    client: httpx.AsyncClient, drop_id: str, user: Session, held_id: str
) -> list[httpx.Response]:
    """One of each kind of request, every one bounded in time."""
    headers = auth(user.access_token)
    requests = [
        reserve(client, drop_id, user.access_token),
        purchase(client, held_id, user.access_token),
        client.delete(f"/api/reservations/{held_id}", headers=headers),
        client.get(f"/api/drops/{drop_id}"),
        client.get("/api/drops"),
        client.get("/api/me/reservations", headers=headers),
    ]
    return [(await answered(request))[0] for request in requests]


async def test_redis_killed_mid_burst_then_restarted_empty(
    make_app: AppFactory, owned_redis: OwnedValkey, stores: StoreUrls, tmp_path: Path
) -> None:
    client, container = await make_app(reconcile_interval_seconds=1)
    admin = await admin_token(client, container)
    drop = await create_drop(client, admin, totalStock=TOTAL)
    crowd = await users(container, 3 * TOTAL)
    prober = crowd[0]
    probe_hold = await reserve(client, drop["id"], prober.access_token)
    assert probe_hold.status_code == 201
    purchases = 0

    async def shopper(user: Session) -> list[int]:
        nonlocal purchases
        codes = await shop(client, drop["id"], user)
        purchases += codes[-1] == 201 and len(codes) == 2
        if purchases == TOTAL // 2 and owned_redis.process is not None:
            owned_redis.kill()  # SIGKILL while the other shoppers' requests are in flight
        return codes

    burst = await asyncio.gather(*(shopper(user) for user in crowd[1 : 2 * TOTAL]))
    assert owned_redis.process is None, "the burst ended before Redis was killed"
    seen = Counter(code for codes in burst for code in codes)
    assert seen[503] > 0, seen
    assert not [code for code in seen if code >= 500 and code != 503], seen

    for response in await probes_while_down(client, drop["id"], prober, probe_hold.json()["id"]):
        assert_unavailable(response)
    ready, _ = await answered(client.get("/readyz"))
    assert_unavailable(ready)
    assert (ready.json()["redis"], ready.json()["postgres"]) == (False, True)

    await asyncio.to_thread(owned_redis.restart, empty=True)
    # No request touches the drop: the reconciler notices Redis lost it and rebuilds it.
    await wait_until(lambda: _mirrored(container, drop["id"]), within=10, what="drop rebuilt")
    sold = sum((await purchase_counts(container, drop["id"])).values())
    assert 0 < sold < TOTAL
    # Every hold died with Redis; every purchase PostgreSQL recorded still counts.
    assert await container.drop_store.counters(drop["id"]) == (TOTAL, TOTAL - sold, sold, 0)

    # Everyone without a purchase tries again, more people than units left: a sell-out.
    bought = await buyers(container, drop["id"])
    again = [user for user in crowd if user.user.id not in bought]
    retried = await asyncio.gather(*(shop(client, drop["id"], user) for user in again))
    seen = Counter(code for codes in retried for code in codes)
    assert not [code for code in seen if code >= 500], seen
    assert seen[201] == 2 * (TOTAL - sold), seen  # each remaining unit: one hold, one purchase

    per_reservation = await purchase_counts(container, drop["id"])
    assert set(per_reservation.values()) == {1}
    assert sum(per_reservation.values()) == TOTAL  # sold out, never oversold
    assert set((await buyers(container, drop["id"])).values()) == {1}  # perUserLimit held
    view = (await client.get(f"/api/drops/{drop['id']}")).json()
    assert (view["availableStock"], view["activeReservations"]) == (0, 0)
    await assert_invariant(container, drop["id"])
    await sneakerdrop_check(stores, tmp_path / "data")


async def _mirrored(container: Container, drop_id: str) -> bool:
    return await container.drop_store.counters(drop_id) is not None
