"""The storm paths never touch PostgreSQL in steady state: browsing and reserving."""

from __future__ import annotations

import httpx

from app import metrics
from app.container import Container
from tests.conftest import AppFactory
from tests.integration.engine.helpers import wait_until
from tests.support.factories import admin_token, auth, create_drop, signup
from tests.support.query_counter import pg_statements


async def started_quietly(
    make_app: AppFactory, **overrides: object
) -> tuple[httpx.AsyncClient, Container]:
    """An app whose reconciler already made its first pass (it runs at start-up and reads
    every drop from PostgreSQL): what follows is the request path alone."""
    before = metrics.RECONCILER_RUNS._value.get()
    client, container = await make_app(**overrides)

    async def reconciled() -> bool:
        return bool(metrics.RECONCILER_RUNS._value.get() > before)

    await wait_until(reconciled, what="the reconciler's first pass")
    return client, container


async def test_browsing_and_reserving_run_no_sql(make_app: AppFactory) -> None:
    client, container = await started_quietly(make_app)
    admin = await admin_token(client, container)
    drops = [await create_drop(client, admin, name=f"Drop {n}") for n in range(20)]
    shopper = (await signup(client))["accessToken"]
    first = drops[0]["id"]
    with pg_statements(container) as statements:
        listed = await client.get("/api/drops")
        one = await client.get(f"/api/drops/{first}")
        held = await client.post(f"/api/drops/{first}/reserve", headers=auth(shopper))
        again = await client.post(f"/api/drops/{first}/reserve", headers=auth(shopper))
        mine = await client.get("/api/me/reservations", headers=auth(shopper))
    assert len(listed.json()) == 20
    assert one.status_code == 200
    assert held.status_code == 201
    assert again.json()["code"] == "LIMIT_REACHED"
    assert mine.status_code == 200
    assert statements == []


async def test_a_repeated_unknown_drop_id_costs_one_lookup(make_app: AppFactory) -> None:
    client, container = await started_quietly(make_app)
    shopper = (await signup(client))["accessToken"]
    made_up = "00000000deadbeef"
    with pg_statements(container) as statements:
        for _ in range(5):
            view = await client.get(f"/api/drops/{made_up}")
            reserve = await client.post(f"/api/drops/{made_up}/reserve", headers=auth(shopper))
            assert view.json()["code"] == reserve.json()["code"] == "DROP_NOT_FOUND"
    assert len([s for s in statements if "FROM drops" in s]) == 1


async def test_a_drop_rebuilt_after_a_flush_is_found_again(
    client: httpx.AsyncClient, container: Container
) -> None:
    admin = await admin_token(client, container)
    drop = await create_drop(client, admin)
    await container.redis.flushdb()
    found = await client.get(f"/api/drops/{drop['id']}")
    assert found.status_code == 200
    assert found.json()["availableStock"] == drop["totalStock"]


async def test_the_storefront_list_is_shared_for_its_window(make_app: AppFactory) -> None:
    client, container = await make_app(drops_cache_ms=5000)
    admin = await admin_token(client, container)
    drop = await create_drop(client, admin, totalStock=3)
    shopper = (await signup(client))["accessToken"]
    first = await client.get("/api/drops")
    held = await client.post(f"/api/drops/{drop['id']}/reserve", headers=auth(shopper))
    assert held.status_code == 201
    again = await client.get("/api/drops")
    assert again.content == first.content  # the same render, within its window
    assert again.json()[0]["availableStock"] == 3
    one = await client.get(f"/api/drops/{drop['id']}")  # a single drop is always current
    assert one.json()["availableStock"] == 2
    filtered = await client.get("/api/drops?status=live")  # so is a filtered list
    assert filtered.json()[0]["availableStock"] == 2
