"""Bursts on a cluster: no oversell across drops in different slots, purchases once."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

from tests.cluster.conftest import ClusterAppFactory
from tests.cluster.helpers import drops_on, purchase, reserve, tokens
from tests.support.cluster import LocalCluster
from tests.support.factories import admin_token, assert_invariant
from tests.support.faults import purchase_counts

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]

UNITS = 100
USERS = 130  # each reserves once in every drop: 30 too many per drop


async def test_a_burst_over_drops_on_every_primary_never_oversells(
    cluster_app: ClusterAppFactory, redis_cluster: LocalCluster
) -> None:
    app = await cluster_app()
    client, container = app.client, app.container
    admin = await admin_token(client, container)
    placed = await drops_on(
        client, admin, redis_cluster, redis_cluster.primary_nodes(), totalStock=UNITS
    )
    drops = [drop for ids in placed.values() for drop in ids]
    users = await tokens(container, USERS, f"burst{time.monotonic_ns()}")

    started = time.monotonic()
    answers = await asyncio.gather(*(reserve(client, d, t) for t in users for d in drops))
    seconds = time.monotonic() - started

    per_drop: dict[str, Counter[object]] = {d: Counter() for d in drops}
    for response in answers:
        code = response.status_code if response.status_code != 409 else response.json()["code"]
        drop_id = str(response.request.url).split("/")[-2]
        per_drop[drop_id][code] += 1
    for drop_id, counts in per_drop.items():
        assert counts == {201: UNITS, "SOLD_OUT": USERS - UNITS}, (drop_id, counts)
        view = (await client.get(f"/api/drops/{drop_id}")).json()
        assert view["availableStock"] == 0
        assert view["activeReservations"] == UNITS
        await assert_invariant(container, drop_id)
    print(f"\ncluster burst: {len(answers)} reserves on {len(drops)} drops in {seconds:.2f}s")


async def test_concurrent_repeats_of_one_purchase_record_one_row(
    cluster_app: ClusterAppFactory, redis_cluster: LocalCluster
) -> None:
    app = await cluster_app()
    client, container = app.client, app.container
    admin = await admin_token(client, container)
    placed = await drops_on(
        client, admin, redis_cluster, redis_cluster.primary_nodes(), totalStock=3
    )
    drops = [drop for ids in placed.values() for drop in ids]
    (user,) = await tokens(container, 1, f"buy{time.monotonic_ns()}")
    for drop_id in drops:
        held = await reserve(client, drop_id, user)
        assert held.status_code == 201, held.text
        reservation = held.json()["id"]
        answers = await asyncio.gather(*(purchase(client, reservation, user) for _ in range(20)))
        statuses = Counter(r.status_code for r in answers)
        assert statuses == {201: 1, 200: 19}, statuses
        assert len({r.json()["id"] for r in answers}) == 1
        assert await purchase_counts(container, drop_id) == {reservation: 1}
        await assert_invariant(container, drop_id)
