"""Expiry on a cluster: keyspace events come from EVERY primary, each hold released once.

A timer key's `expired` event is published only by the node that holds the key, so a
listener that hears one node misses the holds of the others. The sweeper runs once a
minute here (SWEEP_INTERVAL_MS=60000): only the keyspace listener can return the units
within the 2 s this test allows.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.cluster.conftest import ClusterAppFactory
from tests.cluster.helpers import (
    app_listener,
    drops_on,
    expired_by,
    listening_on_every_primary,
    reserve,
    tokens,
)
from tests.support.cluster import LocalCluster
from tests.support.factories import admin_token, assert_invariant
from tests.support.faults import hold_state

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(90)]

HOLDS_PER_DROP = 4
RELEASE_WITHIN = 2.0  # seconds after the hold's deadline


async def test_holds_on_every_primary_are_released_once_by_keyspace_events(
    cluster_app: ClusterAppFactory, redis_cluster: LocalCluster
) -> None:
    app = await cluster_app(reservation_ttl_seconds=1, sweep_interval_ms=60_000)
    client, container = app.client, app.container
    await listening_on_every_primary(app_listener(app), redis_cluster)
    admin = await admin_token(client, container)
    primaries = redis_cluster.primary_nodes()
    assert len(primaries) == 3
    placed = await drops_on(client, admin, redis_cluster, primaries, totalStock=10)
    drops = [drop for ids in placed.values() for drop in ids]
    users = await tokens(container, HOLDS_PER_DROP, f"exp{time.monotonic_ns()}")
    keyspace_before, sweeper_before = expired_by("keyspace"), expired_by("sweeper")

    held = await asyncio.gather(*(reserve(client, d, t) for d in drops for t in users))
    assert [r.status_code for r in held] == [201] * len(held), [r.text for r in held]
    deadline = max(r.json()["expiresAt"] for r in held)
    reserved_at = time.monotonic()

    async def all_back() -> None:
        while True:
            stocks = [(await client.get(f"/api/drops/{d}")).json()["availableStock"] for d in drops]
            if stocks == [10] * len(drops):
                return
            await asyncio.sleep(0.05)

    # The holds live 1 s; their units are back within RELEASE_WITHIN of that.
    await asyncio.wait_for(all_back(), 1 + RELEASE_WITHIN)
    released_after = time.monotonic() - reserved_at
    assert expired_by("keyspace") - keyspace_before == len(held), deadline
    assert expired_by("sweeper") == sweeper_before  # the sweeper did not do it
    for drop in drops:
        await assert_invariant(container, drop)
    states = {await hold_state(container, r.json()["id"]) for r in held}
    assert states == {"EXPIRED"}, states
    print(
        f"\nkeyspace expiry on 3 primaries: {len(held)} holds back {released_after:.2f}s after reserve"
    )
