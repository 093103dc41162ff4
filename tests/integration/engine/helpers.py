"""Helpers for the engine scenarios: many users fast, waiting on conditions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import httpx

from app.container import Container
from app.services.auth import Session
from tests.support.factories import PASSWORD, auth


async def users(container: Container, count: int, prefix: str = "u") -> list[Session]:
    """`count` signed-up users (through the auth service: same rows and tokens as the API)."""
    sessions = []
    for i in range(count):
        sessions.append(
            await container.auth.signup(
                f"{prefix}{i}-{time.monotonic_ns()}@example.com", PASSWORD, None
            )
        )
    return sessions


async def reserve(client: httpx.AsyncClient, drop_id: str, token: str) -> httpx.Response:
    return await client.post(f"/api/drops/{drop_id}/reserve", headers=auth(token))


async def purchase(client: httpx.AsyncClient, reservation_id: str, token: str) -> httpx.Response:
    return await client.post(f"/api/reservations/{reservation_id}/purchase", headers=auth(token))


async def wait_until(
    condition: Callable[[], Awaitable[bool]], timeout: float = 10.0, what: str = "condition"
) -> None:
    """Poll `condition` until true; fail after `timeout` seconds. For states with no event."""
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def available(container: Container, drop_id: str) -> int:
    counters = await container.drops.counters(drop_id)
    assert counters is not None
    return counters[1]


async def live_holds(container: Container, drop_id: str) -> int:
    counters = await container.drops.counters(drop_id)
    assert counters is not None
    return counters[3]
