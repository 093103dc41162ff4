"""SCRIPT FLUSH on the real server while shoppers reserve, buy and cancel: no 5xx at all."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import httpx

from app.services.auth import Session
from tests.integration.engine.helpers import AppFactory, purchase, reserve, users
from tests.support.factories import admin_token, assert_invariant, auth, create_drop
from tests.support.faults import purchase_counts, sneakerdrop_check
from tests.support.owned_stores import OwnedValkey
from tests.support.stores import StoreUrls

TOTAL = 30
SHOPPERS = 60
FLUSH_AFTER = 10  # reserve answers


async def test_scripts_flushed_mid_traffic(
    make_app: AppFactory, owned_redis: OwnedValkey, stores: StoreUrls, tmp_path: Path
) -> None:
    # Rate limits on (generous) so that rate_limit.lua runs on every reserve as well.
    client, container = await make_app(
        rate_limits="on", rate_limit_reserve="1000/second", rate_limit_reserve_ip="10000/second"
    )
    admin = await admin_token(client, container)
    drop = await create_drop(client, admin, totalStock=TOTAL)
    crowd = await users(container, SHOPPERS)
    statuses: Counter[int] = Counter()
    outside = owned_redis.client()  # the operator's connection
    flushed = 0
    answers = 0

    async def flush_mid_traffic() -> None:
        """SCRIPT FLUSH once, after the first answers, while the other requests are in flight."""
        nonlocal answers, flushed
        answers += 1
        if answers == FLUSH_AFTER:
            await asyncio.to_thread(outside.script_flush)
            flushed += 1

    async def shopper(index: int, user: Session) -> None:
        """Reserve; then buy, cancel, or look at the drop and buy, by turns."""
        held = await reserve(client, drop["id"], user.access_token)
        statuses[held.status_code] += 1
        await flush_mid_traffic()
        if held.status_code != 201:
            return
        hold_id = held.json()["id"]
        if index % 3 == 1:
            answer = await client.delete(
                f"/api/reservations/{hold_id}", headers=auth(user.access_token)
            )
        else:
            if index % 3 == 2:
                statuses[(await client.get(f"/api/drops/{drop['id']}")).status_code] += 1
            answer = await purchase(client, hold_id, user.access_token)
        statuses[answer.status_code] += 1

    try:
        await asyncio.gather(*(shopper(i, user) for i, user in enumerate(crowd)))
    finally:
        outside.close()

    assert flushed == 1
    assert not [code for code in statuses if code >= 500], statuses
    assert statuses[201] > 0, statuses
    sold = sum((await purchase_counts(container, drop["id"])).values())
    assert 0 < sold <= TOTAL
    view: httpx.Response = await client.get(f"/api/drops/{drop['id']}")
    body = view.json()
    assert body["availableStock"] + body["activeReservations"] + sold == TOTAL
    await assert_invariant(container, drop["id"])
    await sneakerdrop_check(stores, tmp_path / "data")
