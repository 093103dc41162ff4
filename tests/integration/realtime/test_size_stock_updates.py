"""`stock_update` of a sized drop carries `sizes: {label: availableStock}` (CONTRACT.md "Sizes").

- The broadcaster on the real Redis and scripts: each change made by the hold scripts
  (reserve with a fallback, release) publishes, the broadcaster reads the drop with
  stock_take.lua and sends the drop's sum and each size's stock, in the admin's order; a
  drop without sizes gets no `sizes`.
- A real server and a python-socketio client: the connect snapshot, the `subscribe`
  reply and the push after a reserve through the API carry the same map.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import socketio
from redis.asyncio import Redis

from app.background.broadcaster import Broadcaster
from app.domain import SizeFact
from app.store.drops import DropStore, RebuildMode, RebuildOutcome
from app.store.holds import HoldStore, ReleaseOutcome, ReleaseReason, ReserveOutcome
from app.store.scripts import Scripts
from tests.conftest import make_settings
from tests.support.factories import admin_token, assert_invariant, auth, create_drop, signup
from tests.support.lua_fixtures import TTL_MS, definition, new_ref, whole_second
from tests.support.realtime_server import quiesce, serve_in_process
from tests.support.stores import StoreUrls

pytestmark = pytest.mark.timeout(40)

WAIT_S = 5.0
SIZES = [("US 8", 1), ("US 9.5", 2), ("US 11", 0), ("EU 43⅓", 3)]


class RecordingSocket:
    """Stands in for the Socket.IO server: every event the broadcaster sends, in order."""

    def __init__(self) -> None:
        self.sent: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def emit(self, event: str, data: Any) -> None:
        assert event == "stock_update"
        self.sent.put_nowait(data)

    async def next_of(self, drop_id: str) -> dict[str, Any]:
        async with asyncio.timeout(WAIT_S):
            while True:
                data = await self.sent.get()
                if data["dropId"] == drop_id:
                    return data


@asynccontextmanager
async def broadcasting(redis: Redis, scripts: Scripts) -> AsyncIterator[RecordingSocket]:
    socket = RecordingSocket()
    broadcaster = Broadcaster(redis, scripts, socket, interval_ms=20)
    running = asyncio.create_task(broadcaster.run())
    try:
        async with asyncio.timeout(WAIT_S):
            await broadcaster.leading.wait()  # subscribed: no publish is missed from here
        yield socket
    finally:
        broadcaster.stopping.set()
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running


async def test_broadcaster_sends_each_size(redis: Redis, scripts: Scripts) -> None:
    drops, holds = DropStore(redis, scripts), HoldStore(redis, scripts)
    starts = await whole_second(redis, -60)
    sized = definition(starts, total=6, limit=5)
    plain = definition(starts, total=4, limit=5)
    facts = [SizeFact(label, stock, 0) for label, stock in SIZES]
    built, _ = await drops.rebuild(RebuildMode.INIT, sized, 0, {}, sizes=facts)
    assert built is RebuildOutcome.BUILT
    await drops.rebuild(RebuildMode.INIT, plain, 0, {})

    async with broadcasting(redis, scripts) as socket:
        ref = new_ref(sized.id)
        held = await holds.reserve(ref, TTL_MS, sizes=["US 11", "US 8"])  # US 11 has none
        assert (held.outcome, held.size) == (ReserveOutcome.OK, "US 8")
        event = await socket.next_of(sized.id)
        assert event == {
            "dropId": sized.id,
            "availableStock": 5,
            "sizes": {"US 8": 0, "US 9.5": 2, "US 11": 0, "EU 43⅓": 3},
        }
        assert list(event["sizes"]) == [label for label, _ in SIZES]  # the admin's order

        released = await holds.release(ref, ReleaseReason.CANCELLED)
        assert released.outcome is ReleaseOutcome.RELEASED
        back = await socket.next_of(sized.id)
        assert back["availableStock"] == 6
        assert back["sizes"] == dict(SIZES)

        plain_held = await holds.reserve(new_ref(plain.id), TTL_MS)
        assert plain_held.outcome is ReserveOutcome.OK
        assert await socket.next_of(plain.id) == {"dropId": plain.id, "availableStock": 3}


class SizedListener:
    """A python-socketio client recording every `stock_update` it gets, as it came."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sio.on("stock_update", self._on_stock)

    async def _on_stock(self, data: dict[str, Any]) -> None:
        self.events.put_nowait(data)

    async def next_of(self, drop_id: str) -> dict[str, Any]:
        async with asyncio.timeout(WAIT_S):
            while True:
                data = await self.events.get()
                if data["dropId"] == drop_id:
                    return data


async def test_snapshot_subscribe_and_push_carry_the_sizes(stores: StoreUrls) -> None:
    settings = make_settings(stores)
    async with (
        serve_in_process(settings) as server,
        httpx.AsyncClient(base_url=server.url, timeout=10) as http,
    ):
        admin = await admin_token(http, server.container)
        body = {
            "name": "Sized push",
            "priceCents": 100,
            "sizes": [{"size": label, "totalStock": stock} for label, stock in SIZES],
        }
        made = await http.post("/api/drops", json=body, headers=auth(admin))
        assert made.status_code == 201, made.text
        sized = made.json()["id"]
        plain = (await create_drop(http, admin, totalStock=2))["id"]
        first_shopper, second_shopper = await signup(http), await signup(http)
        first = await http.post(
            f"/api/drops/{sized}/reserve",
            json={"size": "US 9.5"},
            headers=auth(first_shopper["accessToken"]),
        )
        assert first.status_code == 201, first.text
        await quiesce(server.container)  # no push of the set-up is still on its way

        listener = SizedListener()
        await listener.sio.connect(server.url, transports=["websocket"], wait_timeout=5)
        try:
            snapshot = await listener.next_of(sized)  # the connect snapshot
            expected = {"US 8": 1, "US 9.5": 1, "US 11": 0, "EU 43⅓": 3}
            assert snapshot == {"dropId": sized, "availableStock": 5, "sizes": expected}
            assert list(snapshot["sizes"]) == [label for label, _ in SIZES]
            assert await listener.next_of(plain) == {"dropId": plain, "availableStock": 2}

            answer = await listener.sio.call("subscribe", {"dropId": sized}, timeout=WAIT_S)
            assert answer == {"ok": True}
            assert await listener.next_of(sized) == snapshot  # the subscribe reply

            second = await http.post(
                f"/api/drops/{sized}/reserve",
                json={"size": "US 11", "fallbackSizes": ["EU 43⅓"]},
                headers=auth(second_shopper["accessToken"]),
            )
            assert second.json()["size"] == "EU 43⅓"
            pushed = await listener.next_of(sized)
            assert pushed == {
                "dropId": sized,
                "availableStock": 4,
                "sizes": {**expected, "EU 43⅓": 2},
            }
        finally:
            await listener.sio.disconnect()
        await assert_invariant(server.container, sized)
        await assert_invariant(server.container, plain)
