"""A primary SIGKILLed in the middle of a burst: its replica takes over, nothing is sold twice.

PostgreSQL's purchases table is the truth: every acknowledged (201) purchase has its
row, no reservation has two. A hold whose reserve was acknowledged but that the old
primary took with it answers 404 or 410 on purchase, never a sale. After the
failover a reserve works at once (scripts are loaded again on the promoted replica),
the expiry listener has joined the new primary (a hold expiring there is released by
it, the sweeper running once a minute), and the reconciler plus `sneakerdrop check`
find the books balanced.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from app.background.reconciler import Reconciler
from tests.cluster.conftest import ClusterAppFactory
from tests.cluster.helpers import (
    app_listener,
    drops_on,
    expired_by,
    listening_on_every_primary,
    purchase,
    reserve,
    tokens,
)
from tests.support.cluster import LocalCluster
from tests.support.factories import admin_token, assert_invariant
from tests.support.faults import purchase_counts, sneakerdrop_check
from tests.support.realtime_server import wait_until
from tests.support.stores import StoreUrls

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(150)]

UNITS = 30
USERS = 40
HOLD_SECONDS = 3
RELEASE_WITHIN = 2.0


async def test_a_primary_killed_mid_burst_loses_no_sale_and_sells_nothing_twice(
    cluster_app: ClusterAppFactory,
    redis_cluster: LocalCluster,
    stores: StoreUrls,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = await cluster_app(reservation_ttl_seconds=HOLD_SECONDS, sweep_interval_ms=60_000)
    client, container = app.client, app.container
    listener = app_listener(app)
    await listening_on_every_primary(listener, redis_cluster)
    admin = await admin_token(client, container)
    primaries = redis_cluster.primary_nodes()
    placed = await drops_on(client, admin, redis_cluster, primaries, totalStock=UNITS)
    drops = [drop for ids in placed.values() for drop in ids]
    victim = next(node for node in primaries if node.port != redis_cluster.nodes[0].port)
    victim_drop = placed[victim.port][0]
    users = await tokens(container, USERS, f"fo{time.monotonic_ns()}")

    acknowledged: list[tuple[str, str]] = []  # (reservation id, token) of 201 reserves
    bought: set[str] = set()  # reservation ids answered 201 on purchase
    halfway = asyncio.Event()

    async def shopper(token: str, drop_id: str) -> None:
        held = await reserve(client, drop_id, token)
        assert held.status_code in (201, 409, 503), held.text
        if held.status_code != 201:
            return
        reservation = held.json()["id"]
        acknowledged.append((reservation, token))
        if len(acknowledged) >= USERS:
            halfway.set()
        await asyncio.sleep(0)  # let the kill land between reserves and purchases
        paid = await purchase(client, reservation, token)
        assert paid.status_code in (200, 201, 404, 410, 503), paid.text
        if paid.status_code == 201:
            bought.add(reservation)

    async def kill_when_halfway() -> float:
        await halfway.wait()
        failover = await asyncio.to_thread(redis_cluster.kill_primary, victim)
        return failover.seconds

    burst = asyncio.gather(*(shopper(t, d) for t in users for d in drops))
    failover_seconds = await kill_when_halfway()
    await burst
    promoted = next(
        n for n in redis_cluster.primary_nodes() if n.port not in {p.port for p in primaries}
    )

    # Retried purchases of every acknowledged hold: a hold lost with the old primary
    # answers 404 or 410, never a sale.
    for reservation, token in acknowledged:
        if reservation in bought:
            continue
        again = await purchase(client, reservation, token)
        assert again.status_code in (200, 201, 404, 410), again.text
        if again.status_code == 201:
            bought.add(reservation)

    # PostgreSQL is the truth: each 201 has exactly one row, no reservation two.
    rows: Counter[str] = Counter()
    for drop_id in drops:
        rows.update(await purchase_counts(container, drop_id))
    assert set(bought) <= set(rows), set(bought) - set(rows)
    assert all(count == 1 for count in rows.values()), rows
    for drop_id in drops:
        assert sum((await purchase_counts(container, drop_id)).values()) <= UNITS

    # The listener follows the topology: subscribed on the promoted replica.
    rejoined = time.monotonic()
    await listening_on_every_primary(listener, redis_cluster)
    listener_lag = time.monotonic() - rejoined
    # A reserve right after the failover works (scripts loaded again where needed)...
    (late,) = await tokens(container, 1, f"late{time.monotonic_ns()}")
    assert (await reserve(client, victim_drop, late)).status_code in (201, 409)  # SOLD_OUT
    fresh = (await drops_on(client, admin, redis_cluster, [promoted], totalStock=1))[promoted.port]
    keyspace_before = expired_by("keyspace")
    held = await reserve(client, fresh[0], late)
    assert held.status_code == 201, held.text
    # ...and its hold, on the new primary, is released by the keyspace listener.
    expires_at = datetime.fromisoformat(held.json()["expiresAt"].replace("Z", "+00:00"))

    async def released() -> bool:
        return expired_by("keyspace") > keyspace_before

    await wait_until(
        released, expires_at.timestamp() - time.time() + RELEASE_WITHIN, "the late hold's release"
    )

    # The reconciler repairs what asynchronous replication lost; `check` then exits 0.
    await Reconciler(container.db, container.drop_store, container.hold_store).run_once()
    for drop_id in drops:
        await assert_invariant(container, drop_id)
    monkeypatch.setenv("REDIS_CLUSTER", "true")
    await sneakerdrop_check(StoreUrls(stores.database_url, redis_cluster.url), tmp_path / "data")
    await asyncio.to_thread(redis_cluster.restart, victim)
    print(
        f"\nfailover: replica {promoted.address} took over in {failover_seconds:.2f}s; "
        f"{len(acknowledged)} holds acknowledged, {len(bought)} sold; "
        f"listener on the new primary {listener_lag:.2f}s after"
    )
