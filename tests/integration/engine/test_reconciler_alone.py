"""The reconciler as the only safety net: with the expiry listener and the sweeper
stopped, every hold still comes back within TTL + 2 x RECONCILE_INTERVAL_SECONDS."""

from __future__ import annotations

import asyncio
import statistics
from pathlib import Path

from app import metrics
from app.store.entries import parse_entry
from app.store.keys import DropKeys
from tests.integration.engine.helpers import (
    AppFactory,
    background_of,
    past_redis_start,
    redis_now_ms,
    redis_time_reached,
    reserve,
    stock_is,
    users,
    wait_until,
)
from tests.support.factories import admin_token, assert_invariant, create_drop
from tests.support.faults import sneakerdrop_check
from tests.support.stores import StoreUrls

TTL_S = 2
INTERVAL_S = 1
BOUND_MS = (TTL_S + 2 * INTERVAL_S) * 1000
WAVES = 3  # holds taken at different points of the reconciler's cycle
PER_WAVE = 20
WAVE_GAP_MS = 700
LAYERS = ("keyspace", "sweeper", "reconciler", "purchase")


def expired_by(layer: str) -> float:
    value: float = metrics.HOLDS_EXPIRED.labels(layer=layer)._value.get()
    return value


async def test_the_reconciler_alone_returns_every_hold_in_time(
    make_app: AppFactory, stores: StoreUrls, tmp_path: Path
) -> None:
    client, container = await make_app(
        reservation_ttl_seconds=TTL_S, reconcile_interval_seconds=INTERVAL_S
    )
    background = background_of(client)
    # Cancelled only once subscribed: redis-py loses a cancel that lands while it opens a
    # connection, and the listener would go on releasing holds.
    await background.listener.subscribed.wait()
    stopped = [t for t in background.tasks if t.get_name() in ("expiry-listener", "sweeper")]
    assert len(stopped) == 2
    for task in stopped:
        task.cancel()
    _, running = await asyncio.wait(stopped, timeout=5)
    assert not running, running
    await past_redis_start(container)  # a hold made now is not taken for one reloaded from disk
    admin = await admin_token(client, container)
    total = WAVES * PER_WAVE
    drop = await create_drop(client, admin, totalStock=total, perUserLimit=1)
    crowd = await users(container, total)
    before = {layer: expired_by(layer) for layer in LAYERS}

    for wave in range(WAVES):
        if wave:
            start = await redis_now_ms(container) + WAVE_GAP_MS
            await wait_until(
                lambda start=start: redis_time_reached(container, start),  # type: ignore[misc]
                what="next wave",
            )
        shoppers = crowd[wave * PER_WAVE : (wave + 1) * PER_WAVE]
        held = await asyncio.gather(
            *(reserve(client, drop["id"], s.access_token) for s in shoppers)
        )
        assert [r.status_code for r in held] == [201] * PER_WAVE

    await wait_until(
        lambda: stock_is(container, drop["id"], total),
        within=(BOUND_MS + WAVES * WAVE_GAP_MS) / 1000 + 5,
        what="every unit back",
    )

    closed = await container.redis.hvals(DropKeys(drop["id"]).closed)
    entries = [parse_entry(str(raw)) for raw in closed]
    assert len(entries) == total
    assert {e.state for e in entries} == {"EXPIRED"}
    lives = [int(e.extra) - e.created_at_ms for e in entries]  # taken -> returned, Redis time
    lags = [int(e.extra) - e.expires_at_ms for e in entries]  # deadline -> returned
    print(
        f"returned {min(lives)}-{max(lives)} ms after being taken (bound {BOUND_MS} ms); "
        f"after the deadline: median {statistics.median(lags):.0f} ms, max {max(lags)} ms"
    )
    assert min(lags) >= 0  # never before its deadline
    assert max(lives) <= BOUND_MS
    # Every one by the reconciler's pass, none by another layer.
    assert {layer: expired_by(layer) - before[layer] for layer in LAYERS} == {
        "keyspace": 0,
        "sweeper": 0,
        "reconciler": total,
        "purchase": 0,
    }
    await assert_invariant(container, drop["id"])
    await sneakerdrop_check(stores, tmp_path / "data")
