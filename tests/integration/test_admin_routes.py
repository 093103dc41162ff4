"""The admin JSON routes behind the operator console: invariants and live figures, for
admins only, every refusal problem+json; the reserve tally reaching Redis."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from app import reserve_tally
from app.container import Container
from app.store.keys import DropKeys
from app.store.tally import TallyStore
from tests.support.factories import admin_token, auth, create_drop, signup

SIZES = [{"size": "US 9", "totalStock": 2}, {"size": "US 10", "totalStock": 3}]


@pytest.mark.parametrize(
    "path",
    ["/api/admin/invariant", "/api/admin/drops/{id}/invariant", "/api/admin/drops/{id}/stats"],
)
async def test_a_customer_is_forbidden_and_a_stranger_unauthorized(
    client: httpx.AsyncClient, container: Container, path: str
) -> None:
    admin = await admin_token(client, container)
    drop = await create_drop(client, admin)
    customer = (await signup(client))["accessToken"]
    url = path.format(id=drop["id"])
    for headers, status, code in (
        (auth(customer), 403, "FORBIDDEN"),
        ({}, 401, "UNAUTHORIZED"),
        (auth("not-a-token"), 401, "UNAUTHORIZED"),
    ):
        refused = await client.get(url, headers=headers)
        assert refused.status_code == status, (url, refused.text)
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.json()["code"] == code
    assert (await client.get(url, headers=auth(admin))).status_code == 200


@pytest.mark.parametrize("drop_id", ["0000000000000000", "nope", "0123456789abcdef%0A"])
async def test_an_unknown_or_malformed_drop_is_404(
    client: httpx.AsyncClient, container: Container, drop_id: str
) -> None:
    admin = await admin_token(client, container)
    for route in ("invariant", "stats"):
        missing = await client.get(f"/api/admin/drops/{drop_id}/{route}", headers=auth(admin))
        assert missing.status_code == 404, missing.text
        assert missing.json()["code"] == "DROP_NOT_FOUND"


async def test_the_invariant_holds_per_drop_and_per_size_and_reports_drift(
    client: httpx.AsyncClient, container: Container
) -> None:
    admin = await admin_token(client, container)
    drop = await create_drop(client, admin, sizes=SIZES, totalStock=5)
    shopper = (await signup(client))["accessToken"]
    held = await client.post(
        f"/api/drops/{drop['id']}/reserve", json={"size": "US 9"}, headers=auth(shopper)
    )
    assert held.status_code == 201
    bought = await client.post(
        f"/api/reservations/{held.json()['id']}/purchase", headers=auth(shopper)
    )
    assert bought.status_code == 201
    other = (await signup(client))["accessToken"]
    assert (
        await client.post(
            f"/api/drops/{drop['id']}/reserve", json={"size": "US 10"}, headers=auth(other)
        )
    ).status_code == 201

    found = (
        await client.get(f"/api/admin/drops/{drop['id']}/invariant", headers=auth(admin))
    ).json()
    assert found["healthy"] is True
    assert found["drift"] == 0
    assert (found["availableStock"], found["liveHolds"], found["sold"], found["totalStock"]) == (
        3,
        1,
        1,
        5,
    )
    assert (found["soldPostgres"], found["totalStockPostgres"]) == (1, 5)
    assert [
        (s["size"], s["availableStock"], s["liveHolds"], s["sold"], s["soldPostgres"], s["healthy"])
        for s in found["sizes"]
    ] == [("US 9", 1, 0, 1, 1, True), ("US 10", 2, 1, 0, 0, True)]
    listed = (await client.get("/api/admin/invariant", headers=auth(admin))).json()
    assert [(d["dropId"], d["healthy"]) for d in listed] == [(drop["id"], True)]

    # A unit vanishes from Redis's US 10 counter: the size and the drop are reported drifted.
    keys = DropKeys(drop["id"])
    await container.redis.hincrby(keys.sizes, "a:2", -1)
    await container.redis.hincrby(keys.drop, "avail", -1)
    drifted = (
        await client.get(f"/api/admin/drops/{drop['id']}/invariant", headers=auth(admin))
    ).json()
    assert drifted["healthy"] is False
    assert drifted["drift"] == -1
    assert [s["healthy"] for s in drifted["sizes"]] == [True, False]


async def test_stats_show_the_counters_and_each_seconds_reserve_outcomes(
    client: httpx.AsyncClient, container: Container
) -> None:
    admin = await admin_token(client, container)
    drop = await create_drop(client, admin, sizes=SIZES, totalStock=5)
    reserve_tally.take()  # counts of earlier tests in this process
    for _ in range(3):
        token = (await signup(client))["accessToken"]
        await client.post(
            f"/api/drops/{drop['id']}/reserve", json={"size": "US 9"}, headers=auth(token)
        )
    counted = reserve_tally.take()
    assert counted == {(drop["id"], "OK"): 2, (drop["id"], "SIZE_SOLD_OUT"): 1}
    reserve_tally._pending.update(counted)
    store = TallyStore(container.redis)
    last, _ = await reserve_tally.recent(store, drop["id"], 1)
    # As if flushed a second ago; the app's own flush loop may take them first, into the
    # current second, which the route shows once it is complete: all in one second either way.
    await reserve_tally.flush_once(store, second=last)
    deadline = asyncio.get_running_loop().time() + 5
    while True:
        stats = await client.get(
            f"/api/admin/drops/{drop['id']}/stats", params={"seconds": 5}, headers=auth(admin)
        )
        assert stats.status_code == 200, stats.text
        body = stats.json()
        filled = [s["outcomes"] for s in body["seconds"] if s["outcomes"]]
        if filled or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.1)  # a poll interval: the second must end first
    assert len(body["seconds"]) == 5
    assert filled == [{"OK": 2, "SIZE_SOLD_OUT": 1}]
    assert (body["availableStock"], body["liveHolds"], body["sold"], body["totalStock"]) == (
        3,
        2,
        0,
        5,
    )
    assert [(s["size"], s["availableStock"], s["liveHolds"]) for s in body["sizes"]] == [
        ("US 9", 0, 2),
        ("US 10", 3, 0),
    ]
    for params in ({"seconds": 0}, {"seconds": 301}, {"second": 5}):
        refused = await client.get(
            f"/api/admin/drops/{drop['id']}/stats", params=params, headers=auth(admin)
        )
        assert refused.status_code == 422
        assert refused.json()["code"] == "VALIDATION_ERROR"


async def test_the_background_flush_moves_every_count_to_redis(
    client: httpx.AsyncClient, container: Container
) -> None:
    """The app's own flusher (started with the background tasks) empties the counter into
    Redis within about a second: polled, with a deadline."""
    admin = await admin_token(client, container)
    drop = await create_drop(client, admin, totalStock=1)
    for _ in range(2):
        token = (await signup(client))["accessToken"]
        await client.post(f"/api/drops/{drop['id']}/reserve", headers=auth(token))
    store = TallyStore(container.redis)
    deadline = time.monotonic() + 5
    while True:
        _, seconds = await reserve_tally.recent(store, drop["id"], 10)
        total: dict[str, int] = {}
        for second in seconds:
            for code, n in second.items():
                total[code] = total.get(code, 0) + n
        if total == {"OK": 1, "SOLD_OUT": 1}:
            break
        assert time.monotonic() < deadline, total
        await asyncio.sleep(0.1)
