"""Redis hangs (SIGSTOP) mid-burst: requests answer 503 within REDIS_TIMEOUT_SECONDS,
nothing is oversold, and when it answers again so does the API."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

from tests.integration.engine.helpers import AppFactory, reserve, users
from tests.support.factories import admin_token, assert_invariant, create_drop
from tests.support.faults import answered, assert_unavailable, sneakerdrop_check
from tests.support.owned_stores import OwnedValkey
from tests.support.stores import StoreUrls

TOTAL = 30
TIMEOUT_S = 1.0


async def test_a_hung_redis_gives_503_in_time_then_service_resumes(
    make_app: AppFactory, owned_redis: OwnedValkey, stores: StoreUrls, tmp_path: Path
) -> None:
    client, container = await make_app(redis_timeout_seconds=TIMEOUT_S)
    admin = await admin_token(client, container)
    drop = await create_drop(client, admin, totalStock=TOTAL)
    crowd = await users(container, 2 * TOTAL)
    before = await asyncio.gather(*(reserve(client, drop["id"], u.access_token) for u in crowd[:5]))
    assert [r.status_code for r in before] == [201] * 5

    owned_redis.freeze()
    try:
        started = time.monotonic()
        during = await asyncio.gather(
            *(answered(reserve(client, drop["id"], u.access_token)) for u in crowd[5:25])
        )
        for response, seconds in during:
            assert_unavailable(response)
            assert seconds < TIMEOUT_S + 1.5, seconds  # the watchdog, not a hang
        assert time.monotonic() - started < TIMEOUT_S + 2
        ready, _ = await answered(client.get("/readyz"))
        assert_unavailable(ready)
    finally:
        owned_redis.thaw()

    after = await asyncio.gather(
        *(answered(reserve(client, drop["id"], u.access_token)) for u in crowd[5:])
    )
    seen = Counter(response.status_code for response, _ in after)
    assert not [code for code in seen if code >= 500], seen
    # Each unit held once at most: the 5 from before, any a timed-out call may have
    # taken after all (Redis ran it once it woke), and the rest of the crowd's.
    assert seen[201] + seen[409] == len(crowd) - 5, seen
    counters = await container.drop_store.counters(drop["id"])
    assert counters is not None
    _, available, _, live = counters
    assert live == TOTAL - available <= TOTAL
    await assert_invariant(container, drop["id"])
    await sneakerdrop_check(stores, tmp_path / "data")
