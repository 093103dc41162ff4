"""Purchase against expiry, at scale, on real stores, with a slow PostgreSQL.

The app reaches PostgreSQL through tests/support/latency_proxy.py, which delays every
chunk the app sends by a random 0-200 ms; the expiry listener and the sweeper run as
usual. 2,000 purchases, each fired within 50 ms either side of its hold's deadline.
Each ends one way: bought (201, one purchase row, the hold PURCHASED) or expired (410,
no row, the hold EXPIRED and its unit back), never both, and a 410 is answered exactly
when no row exists. (The same race through the sweeper's void of a stale claim is in
test_purchase_races.py.)
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from app.container import Container
from app.services.auth import Session
from tests.integration.engine.helpers import AppFactory, available, users
from tests.support.factories import admin_token, assert_invariant, create_drop
from tests.support.faults import sneakerdrop_check
from tests.support.latency_proxy import LatencyProxy
from tests.support.purchase_races import (
    Trial,
    all_ended,
    closings,
    fire,
    judge,
    past_reload_window,
    purchase_rows,
    warm_pools,
)
from tests.support.stores import StoreUrls

# Both outcomes in volume (each asserted at least a fifth: 400+), the ±50 ms aim around
# every deadline (docs/RELIABILITY.md).
TRIALS = 2000
BUYERS = 200  # each buys in turn: TRIALS / BUYERS holds each, one after another
TTL_SECONDS = 2
# Trials start at a steady rate (about 200 in flight at once), not in bursts: a burst of
# purchases would delay its own event loop past the ±50 ms it aims at. They take about a
# quarter of a core at 50 a second; at 100 a second most stay on aim even on a busy
# machine (1,798 of 2,000 beside a test keeping both cores busy), in 20 s.
STARTS_PER_SECOND = 100
AIM_MS = 50  # each purchase is fired at deadline + uniform(-AIM_MS, +AIM_MS)
LATENCY_MS = (0.0, 200.0)
# Per pool (the ORM's, the sales'). At 0-200 ms a chunk, a 410 holds an ORM connection
# about 0.6 s (6 chunks: a 410 asks PostgreSQL whether the hold was sold) and a sale a
# sales connection about 0.3 s (3 chunks): 100 trials a second need about 30 and 15
# (the ORM's pool opens up to POOL more beyond its size). Warmed, the two hold 60 of
# PostgreSQL's 100 connections.
POOL = 30
# Redis TIME and time.time() read the same clock; expiresAt is whole milliseconds.
CLOCK_SLACK_MS = 2


@pytest.fixture
async def pg_proxy(stores: StoreUrls) -> AsyncIterator[LatencyProxy]:
    proxy = LatencyProxy(stores.database_url, seed=19)
    await proxy.start()
    yield proxy
    await proxy.close()


async def run_trial(
    client: httpx.AsyncClient,
    container: Container,
    drop_id: str,
    buyer: Session,
    start_at: float,
    aim_ms: float,
) -> Trial:
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))  # the trial's start slot
    # The hold through the service (the race is the purchase's; this saves an HTTP hop).
    hold = await container.hold_service.reserve(buyer.user.id, drop_id)
    deadline = int(hold.expires_at.timestamp() * 1000 + 0.5)
    return await fire(client, buyer, hold.id, deadline + aim_ms, deadline)


@pytest.mark.slow
async def test_purchase_against_expiry_with_a_slow_postgres(
    pg_proxy: LatencyProxy, make_app: AppFactory, stores: StoreUrls, tmp_path: Path
) -> None:
    client, container = await make_app(
        database_url=pg_proxy.url,
        reservation_ttl_seconds=TTL_SECONDS,
        purchase_claim_timeout_seconds=2,
        reserve_cooldown_seconds=0,
        db_pool_size=POOL,
    )
    admin = await admin_token(client, container)
    per_buyer = TRIALS // BUYERS
    drop = await create_drop(client, admin, totalStock=TRIALS, perUserLimit=per_buyer)
    crowd, _ = await asyncio.gather(users(container, BUYERS), past_reload_window(container))
    await warm_pools(container, POOL)

    pg_proxy.slow(*LATENCY_MS)
    rng = random.Random(2019)
    began = time.monotonic()
    trials = await asyncio.gather(
        *(
            run_trial(
                client,
                container,
                drop["id"],
                crowd[i % BUYERS],
                began + i / STARTS_PER_SECOND,
                rng.uniform(-AIM_MS, AIM_MS),
            )
            for i in range(TRIALS)
        )
    )
    elapsed = time.monotonic() - began
    # Every hold ends: a bought one is committed, an expired one released by a layer.
    await all_ended(container, drop["id"], within=15)
    delays = list(pg_proxy.stats.delays)
    pg_proxy.slow(0, 0)

    statuses = Counter(t.status for t in trials)
    fired = [t.fired_ms for t in trials]
    on_target = sum(abs(f) <= AIM_MS for f in fired)
    ends = await closings(container, drop["id"])
    lags = sorted(lag for state, lag in ends.values() if state == "EXPIRED")
    print(
        f"\n{TRIALS} purchases at the deadline in {elapsed:.1f} s: {dict(statuses)}; "
        f"fired within ±{AIM_MS} ms: {on_target}, median {statistics.median(fired):+.1f} ms, "
        f"latest {max(fired):+.1f} ms; {len(delays)} PostgreSQL chunks delayed, mean "
        f"{statistics.fmean(delays):.0f} ms; expired holds ended {lags[len(lags) // 2]} ms "
        f"(median), {lags[-1]} ms (max) after their deadline"
    )
    assert set(statuses) <= {200, 201, 410}, statuses
    rows = await purchase_rows(container, drop["id"])
    judge(trials, rows, {rid: state for rid, (state, _) in ends.items()})
    # The claim runs after the request left: a purchase fired past the deadline cannot buy.
    late_buys = [t for t in trials if t.fired_ms > CLOCK_SLACK_MS and t.status != 410]
    assert not late_buys, late_buys[:5]
    assert await available(container, drop["id"]) == TRIALS - len(rows)

    # Both outcomes in volume; the aim held for most trials (a loaded machine delays the
    # event loop, so some fire late); the latency was there.
    assert statuses[201] >= TRIALS // 5, statuses
    assert statuses[410] >= TRIALS // 5, statuses
    assert on_target >= 0.75 * TRIALS, on_target
    assert len(delays) > TRIALS
    assert 80 < statistics.fmean(delays) < 120

    await assert_invariant(container, drop["id"])
    await sneakerdrop_check(stores, tmp_path / "data")
