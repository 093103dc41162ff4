"""Redis out of memory mid-burst (`maxmemory` just above what is used, `noeviction`):
each reserve answers 201 or 503, never 500, and no refused reserve leaves anything behind."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import httpx

from app.services.auth import Session
from app.store.keys import DropKeys
from tests.integration.engine.helpers import AppFactory, reserve, users
from tests.support.factories import admin_token, assert_holds_in_step, assert_invariant, create_drop
from tests.support.faults import answered, assert_unavailable, sneakerdrop_check
from tests.support.owned_stores import OwnedValkey
from tests.support.stores import StoreUrls

SHOPPERS = 1_000  # distinct users, one reserve each; the drop has a unit for every one
CONNECTIONS = 50  # reserves in flight at once
# What the server may take on top of what it uses once the drop and the users are set up:
# a hold costs about 0.5 KB (its entry, due entry, timer key and the user's set), so
# roughly the first few hundred reserves fit and the rest meet the limit.
HEADROOM_BYTES = 384 * 1024


def used_memory(valkey: OwnedValkey) -> int:
    with valkey.client() as conn:
        return int(conn.info("memory")["used_memory"])


def set_maxmemory(valkey: OwnedValkey, limit: int) -> None:
    with valkey.client() as conn:
        conn.config_set("maxmemory", str(limit))


def oom_refusals(valkey: OwnedValkey) -> int:
    """Commands the server refused for want of memory since it started."""
    with valkey.client() as conn:
        return int(conn.info("errorstats").get("errorstat_OOM", {}).get("count", 0))


async def test_reserves_meet_a_full_redis_with_201_or_503(
    make_app: AppFactory, owned_redis: OwnedValkey, stores: StoreUrls, tmp_path: Path
) -> None:
    client, container = await make_app()
    admin = await admin_token(client, container)
    drop = await create_drop(client, admin, totalStock=SHOPPERS, perUserLimit=1)
    crowd: list[Session] = [
        user
        for part in await asyncio.gather(
            *(users(container, SHOPPERS // 4, prefix=f"oom{i}-") for i in range(4))
        )
        for user in part
    ]
    baseline = used_memory(owned_redis)
    set_maxmemory(owned_redis, baseline + HEADROOM_BYTES)
    gate = asyncio.Semaphore(CONNECTIONS)

    async def shopper(user: Session) -> httpx.Response:
        async with gate:
            response, _ = await answered(reserve(client, drop["id"], user.access_token))
        return response

    responses = await asyncio.gather(*(shopper(user) for user in crowd))

    codes = Counter(r.status_code for r in responses)
    print(f"baseline {baseline} B, maxmemory +{HEADROOM_BYTES} B: {dict(codes)}")
    assert set(codes) <= {201, 503}, codes  # never a 500
    assert codes[201] > 0, codes
    assert codes[503] > 0, codes  # the server ran out part-way
    for response in responses:
        if response.status_code == 503:
            assert_unavailable(response)
    assert oom_refusals(owned_redis) >= codes[503]  # refused for memory, not anything else
    held = {r.json()["id"] for r in responses if r.status_code == 201}
    # A refused reserve wrote nothing: exactly the answered holds are live, each indexed.
    keys = DropKeys(drop["id"])
    assert set(await container.redis.hkeys(keys.holds)) == held
    snapshot = await assert_holds_in_step(container.redis, drop["id"], limit=1)
    assert set(snapshot.due) == held
    assert snapshot.counters[:2] == (SHOPPERS, SHOPPERS - len(held))
    # Still full: the checks read only.
    await assert_invariant(container, drop["id"])

    # Memory back: the refused shoppers get their units, and every unit is held once.
    set_maxmemory(owned_redis, 0)
    refused = [u for u, r in zip(crowd, responses, strict=True) if r.status_code == 503]
    again = await asyncio.gather(*(shopper(user) for user in refused))
    assert Counter(r.status_code for r in again) == {201: len(refused)}
    assert await container.drop_store.counters(drop["id"]) == (SHOPPERS, 0, 0, SHOPPERS)
    await assert_invariant(container, drop["id"])
    await sneakerdrop_check(stores, tmp_path / "data")
