"""Socket.IO clients cannot turn a worker against Redis.

Against a real `sneakerdrop serve` (its default 2 workers): 4 rounds of 500 WebSocket
connects and a `subscribe` flood of 300 on one socket per round. Redis's
connected_clients (less what was open before the server started) stays within
2 x REDIS_MAX_CONNECTIONS in every sample and after every round: the pools fill up to
their bound and no further, so the last round adds nothing (before the fix: 594
after the first round). Nothing meant for one client is published through Redis, and
afterwards a push still reaches a client of each worker. The per-address limit and the
`subscribe` rate are checked exactly on one in-process server.

The clients of the rounds are raw engine.io WebSockets (aiohttp): 500 python-socketio
clients would cost this 2-core machine more than the server they test.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
import redis.asyncio as aioredis
import socketio

from app.embedded.common import free_port
from app.realtime.limits import SUBSCRIBE_BURST, SUBSCRIBES_PER_SECOND
from app.store.channels import database_of_url, socketio_channel
from tests.conftest import make_settings
from tests.support.factories import PASSWORD, admin_token, create_drop, signup
from tests.support.realtime_server import (
    EVENT_TIMEOUT,
    listening,
    log_text,
    reserve,
    serve_in_process,
    start_serve_process,
    stop_serve_processes,
    wait_ready,
)
from tests.support.serve import serve_env
from tests.support.stores import StoreUrls

pytestmark = pytest.mark.timeout(90)

ADMIN_EMAIL = "abuse-admin@example.com"
REDIS_MAX_CONNECTIONS = 50  # the default, set explicitly so the bound below follows it
WORKERS = 2  # `sneakerdrop serve`'s default on this 2-core machine
ROUNDS = 4
CONNECTS_PER_ROUND = 500
FLOOD = 300
# The test's own Redis clients opened after the baseline: none (the probe and the
# channel monitor are open before it). The uvicorn supervisor holds no connection.
OWN_ALLOWANCE = 0
# A pool fills as far as a burst needs, up to its bound, over one or two rounds; the
# last round may add a connection a burst had not needed before, never a leak's hundreds.
GROWTH_ALLOWANCE = 5


# --- raw engine.io / Socket.IO v4 over WebSocket -----------------------------------------


@dataclass
class RawSocket:
    """One Socket.IO client on a bare WebSocket: `0` open, `40` connect, `42` event,
    `43` ack, `44` connect error; engine.io's ping `2` is answered with `3`."""

    ws: aiohttp.ClientWebSocketResponse
    events: list[Any] = field(default_factory=list)

    async def packet(self) -> str:
        while True:
            message = await self.ws.receive(timeout=EVENT_TIMEOUT * 2)
            if message.type != aiohttp.WSMsgType.TEXT:
                raise AssertionError(f"socket closed: {message}")
            text = str(message.data)
            if text == "2":
                await self.ws.send_str("3")
                continue
            if text.startswith("42"):
                self.events.append(json.loads(text[2:]))
            return text

    async def stock_update(self, drop_id: str, value: int) -> None:
        wanted = ["stock_update", {"dropId": drop_id, "availableStock": value}]
        async with asyncio.timeout(EVENT_TIMEOUT):
            while wanted not in self.events:
                await self.packet()

    async def flood(self, drop_id: str, count: int) -> list[dict[str, Any]]:
        """`count` subscribes sent at once; their acks, in ack-id order."""
        body = json.dumps(["subscribe", {"dropId": drop_id}])
        for ack_id in range(count):
            await self.ws.send_str(f"42{ack_id}{body}")
        acks: dict[int, dict[str, Any]] = {}
        while len(acks) < count:
            text = await self.packet()
            if text.startswith("43"):
                head = text[2:].index("[")
                acks[int(text[2 : 2 + head])] = json.loads(text[2 + head :])[0]
        return [acks[i] for i in range(count)]


async def raw_connect(session: aiohttp.ClientSession, url: str, address: str) -> RawSocket | str:
    """A connected socket, or the CONNECT_ERROR's message."""
    ws = await session.ws_connect(
        f"{url}/socket.io/?EIO=4&transport=websocket", headers={"X-Forwarded-For": address}
    )
    client = RawSocket(ws)
    opening = await client.packet()
    assert opening.startswith("0{"), opening
    await ws.send_str("40")
    while True:
        text = await client.packet()
        if text.startswith("40"):
            return client
        if text.startswith("44"):
            await ws.close()
            return str(json.loads(text[2:])["message"])


# --- Redis as the test sees it ------------------------------------------------------------


async def connected_clients(probe: aioredis.Redis) -> int:
    return int((await probe.info("clients"))["connected_clients"])


@dataclass
class Sampler:
    """connected_clients every few ms while the rounds run: the peak, not just the ends."""

    probe: aioredis.Redis
    peak: int = 0

    async def run(self) -> None:
        while True:
            self.peak = max(self.peak, await connected_clients(self.probe))
            await asyncio.sleep(0.02)  # a sampling period, not a synchronisation


@dataclass
class ChannelMonitor:
    """Counts what the Socket.IO managers publish for one client (an emit with a room)."""

    pubsub: Any
    to_one_client: int = 0
    broadcasts: int = 0

    async def run(self) -> None:
        while True:
            message = await self.pubsub.get_message(timeout=1.0)
            if message and message.get("type") == "message":
                data = json.loads(message["data"])
                if data.get("method") == "emit" and data.get("room") is not None:
                    self.to_one_client += 1
                else:
                    self.broadcasts += 1


@asynccontextmanager
async def running(*loops: Any) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(loop.run()) for loop in loops]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with suppress(asyncio.CancelledError):
                await task


# --- the serve process ----------------------------------------------------------------------


def _env(stores: StoreUrls, data_dir: Path) -> dict[str, str]:
    return {
        **serve_env(stores, data_dir, ADMIN_EMAIL),
        "STOCK_BROADCAST_INTERVAL_MS": "50",
        "REDIS_MAX_CONNECTIONS": str(REDIS_MAX_CONNECTIONS),
        # The rounds' clients come through a trusted proxy, each from its own address.
        "TRUSTED_PROXIES": "127.0.0.1",
        # One connection per address per worker: two clients of one address are then
        # on two workers, whichever accepted them.
        "SOCKET_CONNECTIONS_PER_IP": "1",
    }


async def one_client_per_worker(session: aiohttp.ClientSession, url: str) -> list[RawSocket]:
    """A client on each worker, from one address: with SOCKET_CONNECTIONS_PER_IP=1 a
    worker that holds one refuses the next, so the clients accepted are on distinct
    workers, and once each worker holds one every further connect is refused."""
    picks: list[RawSocket] = []
    for _ in range(200):
        result = await raw_connect(session, url, "10.255.0.1")
        if isinstance(result, RawSocket):
            picks.append(result)
            if len(picks) == WORKERS:
                refused = await raw_connect(session, url, "10.255.0.1")
                assert refused == "too many connections from this address", refused
                return picks
        else:
            assert result == "too many connections from this address", result
    raise AssertionError(f"{len(picks)} of {WORKERS} workers accepted a client")


async def test_clients_cannot_make_a_worker_open_redis_connections(
    stores: StoreUrls, tmp_path: Path
) -> None:
    url_port = free_port()
    url = f"http://127.0.0.1:{url_port}"
    log = tmp_path / "serve.log"
    channel = socketio_channel(database_of_url(stores.redis_url))
    # One connection however the sampler and the checks overlap: the test's own count
    # does not move.
    probe = aioredis.from_url(
        stores.redis_url, decode_responses=True, single_connection_client=True
    )
    monitor_pubsub = probe.pubsub(ignore_subscribe_messages=True)
    await monitor_pubsub.subscribe(channel)
    monitor = ChannelMonitor(monitor_pubsub)
    own = await connected_clients(probe)  # the probe, the monitor and anything before
    bound = WORKERS * REDIS_MAX_CONNECTIONS + OWN_ALLOWANCE
    processes = [await start_serve_process(url_port, _env(stores, tmp_path / "data"), log)]
    connector = aiohttp.TCPConnector(limit=0)
    after: list[int] = []
    sampler = Sampler(probe)
    try:
        await wait_ready(processes[0], url, log)
        async with (
            httpx.AsyncClient(base_url=url, timeout=10) as http,
            aiohttp.ClientSession(connector=connector) as session,
            running(sampler, monitor),
        ):
            login = await http.post(
                "/api/auth/login", json={"email": ADMIN_EMAIL, "password": PASSWORD}
            )
            assert login.status_code == 200, login.text
            drop = (await create_drop(http, login.json()["accessToken"], totalStock=10))["id"]
            ready = await connected_clients(probe) - own
            floods: list[dict[str, int]] = []
            for round_no in range(ROUNDS):
                results = await asyncio.gather(
                    *(
                        raw_connect(session, url, f"10.{round_no}.{i // 250}.{i % 250 + 1}")
                        for i in range(CONNECTS_PER_ROUND)
                    )
                )
                sockets = [r for r in results if isinstance(r, RawSocket)]
                assert len(sockets) == CONNECTS_PER_ROUND, [
                    r for r in results if isinstance(r, str)
                ][:3]
                # The contract's snapshot: one stock_update per storefront drop, our drop's too.
                assert ["stock_update", {"dropId": drop, "availableStock": 10}] in sockets[0].events
                acks = await sockets[0].flood(drop, FLOOD)
                codes: dict[str, int] = {}
                for ack in acks:
                    code = "OK" if ack == {"ok": True} else str(ack.get("code"))
                    codes[code] = codes.get(code, 0) + 1
                floods.append(codes)
                await asyncio.gather(*(s.ws.close() for s in sockets))
                after.append(await connected_clients(probe) - own)
                figures = f"ready {ready}, after each round {after}, peak {sampler.peak - own}"
                print(f"\nround {round_no + 1}: {figures}; flood {codes}")
                assert max(sampler.peak - own, after[-1]) <= bound, figures
            # The pools may fill over the first rounds, up to their bound; by the last
            # round they have, and it adds nothing.
            assert after[-1] <= after[-2] + GROWTH_ALLOWANCE, figures
            for codes in floods:  # the flood was throttled, not served 300 times
                assert codes.get("RATE_LIMITED", 0) >= FLOOD // 2, floods
            # Nothing meant for one client went through Redis.
            assert monitor.to_one_client == 0, monitor

            # Pushes still cross workers: a reserve reaches a client of each worker.
            picks = await one_client_per_worker(session, url)
            numsub = dict(await probe.pubsub_numsub(channel))
            assert numsub[channel] == WORKERS + 1  # one listener per worker, and the monitor
            user = await signup(http)
            await reserve(http, drop, user["accessToken"])
            await asyncio.gather(*(pick.stock_update(drop, 9) for pick in picks))
            for pick in picks:
                await pick.ws.close()
            assert sampler.peak - own <= bound, f"peak {sampler.peak - own}"
    finally:
        await connector.close()
        codes_ = await stop_serve_processes(processes)
        await monitor_pubsub.aclose()
        await probe.aclose()
    assert codes_ == [0], log_text(log)[-3000:]


# --- one in-process server: the exact limits -------------------------------------------------


async def _connect(url: str, address: str) -> socketio.AsyncClient:
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(
        url,
        transports=["websocket"],
        headers={"X-Forwarded-For": address},
        socketio_path="socket.io",
        wait_timeout=5,
    )
    return client


async def _refusal(url: str, address: str) -> Any:
    """What a refused client's `connect_error` handler receives."""
    client = socketio.AsyncClient(reconnection=False)
    errors: list[Any] = []
    client.on("connect_error", errors.append)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect(
            url,
            transports=["websocket"],
            headers={"X-Forwarded-For": address},
            socketio_path="socket.io",
            wait_timeout=5,
        )
    assert len(errors) == 1, errors
    return errors[0]


async def test_connections_beyond_the_per_address_limit_are_refused(stores: StoreUrls) -> None:
    settings = make_settings(stores, socket_connections_per_ip=3, trusted_proxies=["127.0.0.1"])
    async with serve_in_process(settings) as server:
        held = [await _connect(server.url, "10.1.1.1") for _ in range(3)]
        try:
            assert await _refusal(server.url, "10.1.1.1") == {
                "message": "too many connections from this address",
                "data": {"code": "TOO_MANY_CONNECTIONS"},
            }
            other = await _connect(server.url, "10.1.1.2")  # another address has its own
            await other.disconnect()
            await held.pop().disconnect()

            async def reconnect() -> socketio.AsyncClient:
                # The slot comes back when the server has seen the disconnect, an event
                # the client cannot await: it tries again until then.
                for _ in range(100):
                    try:
                        return await _connect(server.url, "10.1.1.1")
                    except socketio.exceptions.ConnectionError:
                        await asyncio.sleep(0.05)
                raise AssertionError("the slot was never given back")

            held.append(await reconnect())
        finally:
            for client in held:
                await client.disconnect()


async def test_a_subscribe_flood_is_rate_limited(stores: StoreUrls) -> None:
    settings = make_settings(stores)
    async with (
        serve_in_process(settings) as server,
        httpx.AsyncClient(base_url=server.url, timeout=10) as http,
    ):
        drop = (await create_drop(http, await admin_token(http, server.container)))["id"]
        async with listening(server) as client:
            started = time.monotonic()
            answers = await asyncio.gather(
                *(client.call("subscribe", {"dropId": drop}) for _ in range(100))
            )
            elapsed = time.monotonic() - started
            served = answers.count({"ok": True})
            limited = answers.count({"ok": False, "code": "RATE_LIMITED"})
            assert served + limited == len(answers), answers
            assert 1 <= served <= SUBSCRIBE_BURST + SUBSCRIBES_PER_SECOND * elapsed + 1
            assert limited >= 1
            assert client.sio.connected  # a refused subscribe does not cost the connection
