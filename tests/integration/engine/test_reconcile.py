"""The reconciler finds and repairs drift; `check` reports it."""

from __future__ import annotations

import httpx
import pytest

from app import commands
from app.container import Container
from app.store import keys
from tests.integration.engine.helpers import available, background_of, purchase, reserve, users
from tests.support.factories import admin_token, assert_invariant, auth, create_drop


async def test_drifted_counter_is_reported_and_repaired(
    client: httpx.AsyncClient, container: Container, capsys: pytest.CaptureFixture[str]
) -> None:
    admin = await admin_token(client, container)
    drop = await create_drop(client, admin, totalStock=10)
    (user,) = await users(container, 1)
    assert (await reserve(client, drop["id"], user.access_token)).status_code == 201
    await container.redis.hset(keys.DropKeys(drop["id"]).drop, "avail", 12)  # type: ignore[misc]

    assert await commands.check(container.settings) == 1
    assert "DRIFT +3" in capsys.readouterr().out

    checks = await background_of(client).reconciler.run_once()
    assert [c.healthy for c in checks] == [False]
    assert await available(container, drop["id"]) == 9
    assert await commands.check(container.settings) == 0
    await assert_invariant(container, drop["id"])


async def test_drop_lost_by_redis_is_rebuilt(
    client: httpx.AsyncClient, container: Container
) -> None:
    admin = await admin_token(client, container)
    drop = await create_drop(client, admin, totalStock=4)
    (user,) = await users(container, 1)
    held = (await reserve(client, drop["id"], user.access_token)).json()
    assert (await purchase(client, held["id"], user.access_token)).status_code == 201
    for key in keys.DropKeys(drop["id"]).all_static():
        await container.redis.delete(key)

    await background_of(client).reconciler.run_once()

    view = (await client.get(f"/api/drops/{drop['id']}")).json()
    assert (view["totalStock"], view["availableStock"]) == (4, 3)
    # The per-user count was rebuilt from purchases: the limit of 1 still holds.
    again = await reserve(client, drop["id"], user.access_token)
    assert again.json()["code"] == "LIMIT_REACHED"
    await assert_invariant(container, drop["id"])


async def test_redis_restored_from_an_older_snapshot(
    client: httpx.AsyncClient, container: Container
) -> None:
    """A purchased hold that an old snapshot shows as ACTIVE never returns to stock."""
    admin = await admin_token(client, container)
    drop = await create_drop(client, admin, totalStock=5)
    (user,) = await users(container, 1)
    held = (await reserve(client, drop["id"], user.access_token)).json()
    drop_keys = keys.DropKeys(drop["id"])
    ref = keys.parse_hold_id(held["id"])
    assert ref is not None
    snapshot_keys = [
        *drop_keys.all_static(),
        drop_keys.timer(held["id"]),
        drop_keys.user_holds(ref.user_id),
    ]
    snapshot = {}
    for key in snapshot_keys:
        dumped = await container.redis.dump(key)
        if dumped is not None:
            snapshot[key] = (dumped, await container.redis.pttl(key))
    assert (await purchase(client, held["id"], user.access_token)).status_code == 201

    for key in snapshot_keys:
        await container.redis.delete(key)
    for key, (payload, ttl) in snapshot.items():
        await container.redis.restore(key, max(ttl, 0), payload, replace=True)
    assert await container.redis.hexists(drop_keys.holds, held["id"])  # type: ignore[misc]

    await background_of(client).reconciler.run_once()

    assert not await container.redis.hexists(drop_keys.holds, held["id"])  # type: ignore[misc]
    view = (await client.get(f"/api/drops/{drop['id']}")).json()
    assert (view["availableStock"], view["activeReservations"]) == (4, 0)
    await assert_invariant(container, drop["id"])


async def test_cancelling_a_drop_keeps_a_restored_sold_hold_sold(
    client: httpx.AsyncClient, container: Container
) -> None:
    """A drop cancelled while Redis shows a bought hold as ACTIVE: the unit stays sold."""
    admin = await admin_token(client, container)
    drop = await create_drop(client, admin, totalStock=5)
    buyer, holder = await users(container, 2)
    bought = (await reserve(client, drop["id"], buyer.access_token)).json()
    kept = (await reserve(client, drop["id"], holder.access_token)).json()
    drop_keys = keys.DropKeys(drop["id"])
    snapshot = {
        key: (await container.redis.dump(key), await container.redis.pttl(key))
        for key in drop_keys.all_static()
    }
    assert (await purchase(client, bought["id"], buyer.access_token)).status_code == 201
    for key, (payload, ttl) in snapshot.items():  # Redis back to before the purchase
        await container.redis.delete(key)
        if payload is not None:
            await container.redis.restore(key, max(ttl, 0), payload, replace=True)

    cancelled = await client.patch(
        f"/api/drops/{drop['id']}", json={"status": "cancelled"}, headers=auth(admin)
    )

    assert cancelled.status_code == 200, cancelled.text
    view = (await client.get(f"/api/drops/{drop['id']}")).json()
    assert (view["availableStock"], view["activeReservations"]) == (4, 0)  # kept's unit back
    assert [b["displayName"] for b in view["recentBuyers"]] == [buyer.user.display_name]
    assert kept["id"] != bought["id"]
    await assert_invariant(container, drop["id"])
