"""`stock_update` over real Socket.IO connections to a real uvicorn server.

Each test serves the app with uvicorn on a free port in this event loop, and talks
to it with httpx (REST) and python-socketio's AsyncClient (WebSocket or polling).
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from app.store.channels import database_of_url, socketio_channel
from tests.conftest import make_settings
from tests.support.factories import admin_token, assert_invariant, auth, create_drop, signup
from tests.support.realtime_server import (
    LiveServer,
    StockEvent,
    available_via_get,
    listening,
    quiesce,
    reserve,
    serve_in_process,
    users,
)
from tests.support.stores import StoreUrls

pytestmark = pytest.mark.timeout(30)


@dataclass
class Rig:
    server: LiveServer
    http: httpx.AsyncClient
    admin: str


@asynccontextmanager
async def rig(stores: StoreUrls, **overrides: Any) -> AsyncIterator[Rig]:
    settings = make_settings(stores, **overrides)
    async with (
        serve_in_process(settings) as server,
        httpx.AsyncClient(base_url=server.url, timeout=10) as http,
    ):
        yield Rig(server, http, await admin_token(http, server.container))


async def _connect_snapshot(stores: StoreUrls, transports: list[str]) -> None:
    async with rig(stores) as r:
        first = await create_drop(r.http, r.admin, totalStock=7)
        second = await create_drop(r.http, r.admin, totalStock=13)
        gone = await create_drop(r.http, r.admin, totalStock=5)
        patched = await r.http.patch(
            f"/api/drops/{gone['id']}", json={"status": "cancelled"}, headers=auth(r.admin)
        )
        assert patched.status_code == 200, patched.text
        user = await signup(r.http)
        await reserve(r.http, first["id"], user["accessToken"])
        await quiesce(r.server.container)  # no push of the set-up is still on its way

        async with listening(r.server, transports) as client:
            # Barrier: `subscribe` answers after the connect snapshot, with one more event.
            assert await client.call("subscribe", {"dropId": second["id"]}) == {"ok": True}
            snapshot: list[StockEvent] = []
            while True:
                event = await client.next()
                if event.drop_id == second["id"] and any(
                    e.drop_id == second["id"] for e in snapshot
                ):
                    assert event.available == 13
                    break
                snapshot.append(event)
            assert client.sio.transport() == transports[0]

        assert sorted((e.drop_id, e.available) for e in snapshot) == sorted(
            [(first["id"], 6), (second["id"], 13)]
        )
        assert await available_via_get(r.http, first["id"]) == 6
        await assert_invariant(r.server.container)


async def test_connect_sends_every_storefront_drop_over_websocket(stores: StoreUrls) -> None:
    await _connect_snapshot(stores, ["websocket"])


async def test_connect_sends_every_storefront_drop_over_polling(stores: StoreUrls) -> None:
    await _connect_snapshot(stores, ["polling"])


async def test_reserve_cancel_and_restock_push_the_new_value(stores: StoreUrls) -> None:
    async with rig(stores) as r:
        drop = (await create_drop(r.http, r.admin, totalStock=10))["id"]
        user = await signup(r.http)
        await quiesce(r.server.container)
        async with listening(r.server) as client:
            await client.wait_for(drop, 10)  # the connect snapshot

            held = await reserve(r.http, drop, user["accessToken"])
            await client.wait_for(drop, 9)
            assert await available_via_get(r.http, drop) == 9

            cancelled = await r.http.delete(
                f"/api/reservations/{held['id']}", headers=auth(user["accessToken"])
            )
            assert cancelled.status_code == 204, cancelled.text
            await client.wait_for(drop, 10)
            assert await available_via_get(r.http, drop) == 10

            restocked = await r.http.post(
                f"/api/drops/{drop}/restock", json={"quantity": 5}, headers=auth(r.admin)
            )
            assert restocked.status_code == 200, restocked.text
            await client.wait_for(drop, 15)
            assert await available_via_get(r.http, drop) == 15
        await assert_invariant(r.server.container, drop)


async def test_expiry_pushes_the_returned_unit(stores: StoreUrls) -> None:
    async with rig(stores, reservation_ttl_seconds=1, sweep_interval_ms=500) as r:
        drop = (await create_drop(r.http, r.admin, totalStock=3))["id"]
        user = await signup(r.http)
        await quiesce(r.server.container)
        async with listening(r.server) as client:
            await client.wait_for(drop, 3)
            await reserve(r.http, drop, user["accessToken"])
            await client.wait_for(drop, 2)
            await client.wait_for(drop, 3, within=6)  # the hold expired after 1 s
            assert await available_via_get(r.http, drop) == 3
        mine = await r.http.get("/api/me/reservations", headers=auth(user["accessToken"]))
        assert mine.status_code == 200
        assert mine.json() == []
        await assert_invariant(r.server.container, drop)


async def test_purchase_pushes_nothing(stores: StoreUrls) -> None:
    interval_ms = 100
    async with rig(stores, stock_broadcast_interval_ms=interval_ms) as r:
        drop = (await create_drop(r.http, r.admin, totalStock=4))["id"]
        user = await signup(r.http)
        await quiesce(r.server.container)
        async with listening(r.server) as client:
            await client.wait_for(drop, 4)
            held = await reserve(r.http, drop, user["accessToken"])
            await client.wait_for(drop, 3)
            await quiesce(r.server.container)  # the burst is over: nothing left to push

            bought = await r.http.post(
                f"/api/reservations/{held['id']}/purchase", headers=auth(user["accessToken"])
            )
            assert bought.status_code == 201, bought.text
            # The absence of an event is the assertion: wait 3 intervals for a stray push.
            deadline = time.monotonic() + 3 * interval_ms / 1000
            while (left := deadline - time.monotonic()) > 0:
                try:
                    event = await asyncio.wait_for(client.queue.get(), left)
                except TimeoutError:
                    break
                assert event.drop_id != drop, f"a purchase pushed {event}"
            assert await available_via_get(r.http, drop) == 3
        await assert_invariant(r.server.container, drop)


async def test_burst_is_rate_limited_and_ends_on_the_final_value(stores: StoreUrls) -> None:
    interval_ms = 100
    async with rig(stores, stock_broadcast_interval_ms=interval_ms) as r:
        drop = (await create_drop(r.http, r.admin, totalStock=200))["id"]
        crowd = await users(r.server.container, 100)
        await quiesce(r.server.container)
        async with listening(r.server) as client:
            await client.wait_for(drop, 200)
            started = time.monotonic()
            responses = await asyncio.gather(
                *(
                    r.http.post(f"/api/drops/{drop}/reserve", headers=auth(s.access_token))
                    for s in crowd
                )
            )
            assert [x.status_code for x in responses] == [201] * 100
            last = await client.wait_for(drop, 100, within=8)

        burst = [e for e in client.seen if e.drop_id == drop and started <= e.at <= last.at]
        duration = last.at - started
        assert burst[-1] == last
        assert len(burst) <= duration / (interval_ms / 1000) + 3, (len(burst), duration)
        values = [e.available for e in burst]
        assert values == sorted(values, reverse=True), values  # reserves only: never up
        assert await available_via_get(r.http, drop) == last.available == 100
        await assert_invariant(r.server.container, drop)


async def test_subscribe_acks_and_sends_the_current_value(stores: StoreUrls) -> None:
    async with rig(stores) as r:
        drop = (await create_drop(r.http, r.admin, totalStock=4))["id"]
        user = await signup(r.http)
        await reserve(r.http, drop, user["accessToken"])
        await quiesce(r.server.container)
        async with listening(r.server) as client:
            await client.wait_for(drop, 3)  # the connect snapshot
            assert await client.call("subscribe", {"dropId": drop}) == {"ok": True}
            assert await client.next() == client.seen[-1]
            assert (client.seen[-1].drop_id, client.seen[-1].available) == (drop, 3)
        await assert_invariant(r.server.container, drop)


@pytest.mark.parametrize(
    "payload",
    [
        {"dropId": "0123456789abcdef"},  # well-formed, no such drop
        {"dropId": "not-a-drop"},
        {"dropId": "../../etc/passwd"},
        {"dropId": 42},
        {},
        "0123456789abcdef",
        None,
    ],
    ids=["unknown", "not-hex", "path", "number", "no-drop-id", "bare-string", "none"],
)
async def test_subscribe_to_unknown_or_malformed_drop(stores: StoreUrls, payload: Any) -> None:
    async with rig(stores) as r, listening(r.server) as client:
        answer = await client.call("subscribe", payload)
        assert answer == {"ok": False, "code": "DROP_NOT_FOUND"}
        assert client.sio.connected  # a bad subscribe does not cost the connection


async def test_no_redis_connection_leaks_when_a_push_precedes_the_first_client(
    stores: StoreUrls,
) -> None:
    """The Socket.IO Redis manager closes every connection it opened, whatever the order."""
    probe = aioredis.from_url(stores.redis_url, decode_responses=True)
    try:
        baseline = len(await probe.client_list())
        async with probe.pubsub(ignore_subscribe_messages=True) as channel:
            await channel.subscribe(socketio_channel(database_of_url(stores.redis_url)))
            settings = make_settings(stores)
            async with (
                serve_in_process(settings) as server,
                httpx.AsyncClient(base_url=server.url, timeout=10) as http,
            ):
                admin = await admin_token(http, server.container)
                drop = (await create_drop(http, admin, totalStock=2))["id"]
                # The broadcaster's push reaches Redis before any client ever connected.
                deadline = time.monotonic() + 5
                while await channel.get_message(timeout=0.5) is None:
                    assert time.monotonic() < deadline, "no push published"
                async with listening(server) as client:  # python-socketio's listener starts
                    await client.wait_for(drop, 2)
        gc.collect()  # finalise anything left behind now, so its warning belongs here
        assert len(await probe.client_list()) == baseline
    finally:
        await probe.aclose()
