"""Clients for the rig tests: sessions, a reserve-and-buy burst, timed requests, waits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.support.factories import PASSWORD, auth, create_drop
from tests.support.rig import ADMIN_EMAIL, ADMIN_PASSWORD

_serial = iter(range(1, 10**9))


@dataclass(frozen=True)
class Timed:
    sent: float  # time.monotonic() when the request left
    seconds: float
    response: httpx.Response


async def timed(request: Any) -> Timed:
    sent = time.monotonic()
    response = await request
    return Timed(sent, time.monotonic() - sent, response)


async def admin_drop(lb: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    login = await lb.post(
        "/api/auth/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
    )
    assert login.status_code == 200, login.text
    return await create_drop(lb, login.json()["accessToken"], **fields)


async def tokens(lb: httpx.AsyncClient, count: int) -> list[str]:
    """Access tokens of `count` new users (signed up through the balancer)."""
    stamp = time.time_ns()

    async def one() -> str:
        email = f"rig{stamp}-{next(_serial)}@example.com"
        response = await lb.post("/api/auth/signup", json={"email": email, "password": PASSWORD})
        assert response.status_code == 201, response.text
        token: str = response.json()["accessToken"]
        return token

    return list(await asyncio.gather(*(one() for _ in range(count))))


@dataclass
class Burst:
    """Users reserving and buying one drop through the balancer until stopped."""

    lb: httpx.AsyncClient
    drop_id: str
    users: list[str]
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    # (when the request was sent, its status, its problem code or "")
    statuses: list[tuple[float, int, str]] = field(default_factory=list)
    bought: list[str] = field(default_factory=list)  # reservation ids of 201 purchases
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def _send(self, path: str, token: str) -> httpx.Response:
        sent = time.monotonic()
        response = await self.lb.post(path, headers=auth(token))
        code = ""
        if response.headers.get("content-type", "").startswith("application/problem+json"):
            code = response.json().get("code", "")
        self.statuses.append((sent, response.status_code, code))
        return response

    async def _user(self, token: str) -> None:
        while not self.stop.is_set():
            held = await self._send(f"/api/drops/{self.drop_id}/reserve", token)
            if held.status_code == 201:
                rid = held.json()["id"]
                paid = await self._send(f"/api/reservations/{rid}/purchase", token)
                if paid.status_code == 201:
                    self.bought.append(rid)
            elif held.status_code == 409 and held.json()["code"] == "SOLD_OUT":
                return
            await asyncio.sleep(0.02)  # a client's think time, not a synchronisation

    def start(self) -> None:
        self.tasks = [asyncio.create_task(self._user(token)) for token in self.users]

    async def finish(self) -> None:
        self.stop.set()
        await asyncio.gather(*self.tasks)

    def sent_since(self, since: float) -> list[tuple[float, int, str]]:
        return [entry for entry in self.statuses if entry[0] >= since]


async def until(condition: Callable[[], Any], within: float, what: str) -> float:
    """Poll `condition` (sync or async) until truthy; return how long it took."""
    started = time.monotonic()
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return time.monotonic() - started
        if time.monotonic() - started > within:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.05)
