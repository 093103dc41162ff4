"""Helpers for the engine scenarios: many users fast, waiting on conditions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import datetime

import httpx

from app.background.runner import BackgroundTasks
from app.container import Container
from app.services.auth import Session
from app.store.client import server_started_ms
from tests.support.factories import PASSWORD, auth

AppFactory = Callable[..., Awaitable[tuple[httpx.AsyncClient, Container]]]


async def users(container: Container, count: int, prefix: str = "u") -> list[Session]:
    """`count` signed-up users (through the auth service: same rows and tokens as the API)."""
    sessions = []
    for i in range(count):
        sessions.append(
            await container.auth_service.signup(
                f"{prefix}{i}-{time.monotonic_ns()}@example.com", PASSWORD, None
            )
        )
    return sessions


async def reserve(client: httpx.AsyncClient, drop_id: str, token: str) -> httpx.Response:
    return await client.post(f"/api/drops/{drop_id}/reserve", headers=auth(token))


async def purchase(client: httpx.AsyncClient, reservation_id: str, token: str) -> httpx.Response:
    return await client.post(f"/api/reservations/{reservation_id}/purchase", headers=auth(token))


async def wait_until(
    condition: Callable[[], Awaitable[bool]], within: float = 10.0, what: str = "condition"
) -> None:
    """Poll `condition` until true; fail after `within` seconds. For states with no event."""
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def available(container: Container, drop_id: str) -> int:
    counters = await container.drop_store.counters(drop_id)
    assert counters is not None
    return counters[1]


async def live_holds(container: Container, drop_id: str) -> int:
    counters = await container.drop_store.counters(drop_id)
    assert counters is not None
    return counters[3]


async def stock_is(container: Container, drop_id: str, expected: int) -> bool:
    return await available(container, drop_id) == expected


async def redis_now_ms(container: Container) -> int:
    seconds, micros = await container.redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def redis_time_reached(container: Container, ms: int) -> bool:
    return await redis_now_ms(container) >= ms


async def past_redis_start(container: Container) -> None:
    """Wait until a hold made now counts as made after Redis started (`server_started_ms`,
    rounded a second late). On a Redis started moments before, as the embedded one is at
    the start of a test session, an earlier hold counts as reloaded from disk, and the
    expiry listener leaves it to the sweeper."""
    started_ms = await server_started_ms(container.redis)
    await wait_until(
        lambda: redis_time_reached(container, started_ms + 1), within=5, what="Redis start"
    )


def deadline_ms(reservation: dict[str, str]) -> int:
    return int(datetime.fromisoformat(reservation["expiresAt"]).timestamp() * 1000)


def background_of(client: httpx.AsyncClient) -> BackgroundTasks:
    """The background loops of the app behind a test client."""
    app = client._transport.app  # type: ignore[attr-defined]
    background: BackgroundTasks = app.api.state.background
    return background


async def stop_listener(background: BackgroundTasks) -> None:
    """Stop the keyspace listener for good. Cancelled only once subscribed: redis-py
    loses a cancel that lands while it opens a connection, and the listener would go on
    releasing holds."""
    await background.listener.subscribed.wait()
    listeners = [t for t in background.tasks if t.get_name() == "expiry-listener"]
    assert listeners, "no expiry listener is running"
    for task in listeners:
        task.cancel()
    _, running = await asyncio.wait(listeners, timeout=5)
    assert not running, "the expiry listener did not stop"
