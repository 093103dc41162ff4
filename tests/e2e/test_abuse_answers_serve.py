"""The abuse answers of issue 23 on a real `sneakerdrop serve` with its default workers.

The in-process tests cover each answer (tests/integration/test_deleted_user.py,
test_idempotency_transient.py, engine/test_cooldown.py, test_page_assets.py); these
check that they hold through uvicorn, its workers and the environment-variable
settings: a deleted account is 401 (never 5xx), a 429 under an Idempotency-Key is not
replayed after its Retry-After, a cancelled hold's cooldown is a 409 COOLDOWN with
Retry-After and then a 201, and /metrics wants its bearer token and names no server.
Each case has its own user, as the reserve limit (1/second) is per user.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.support.factories import PASSWORD, auth, create_drop, signup
from tests.support.serve import running_serve
from tests.support.stores import StoreUrls

pytestmark = pytest.mark.timeout(90)

ADMIN_EMAIL = "abuse-answers-admin@example.com"
METRICS_TOKEN = "m" * 32
COOLDOWN_SECONDS = 2
RESERVE_LIMIT = "1/second"


def assert_problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code
    assert "server" not in response.headers


def retry_after(response: httpx.Response) -> int:
    seconds = int(response.headers["retry-after"])
    assert seconds >= 1, response.headers
    return seconds


async def reserve(http: httpx.AsyncClient, drop: str, headers: dict[str, str]) -> httpx.Response:
    """A reserve that waits out the per-user limit (429 + Retry-After) when it trips."""
    for _ in range(5):
        response = await http.post(f"/api/drops/{drop}/reserve", headers=headers)
        if response.status_code != 429:
            return response
        assert_problem(response, 429, "RATE_LIMITED")
        await asyncio.sleep(retry_after(response))
    raise AssertionError(f"still rate limited: {response.text}")


async def delete_user(stores: StoreUrls, user_id: str) -> None:
    """As tests/integration/test_deleted_user.py does, straight in PostgreSQL."""
    engine = create_async_engine(stores.database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("DELETE FROM users WHERE id = :id"), {"id": user_id})
    finally:
        await engine.dispose()


async def deleted_user_is_401(http: httpx.AsyncClient, stores: StoreUrls, drop: str) -> None:
    session: dict[str, Any] = await signup(http)
    user = auth(session["accessToken"])
    held = await reserve(http, drop, user)
    assert held.status_code == 201, held.text

    await delete_user(stores, session["user"]["id"])

    buy = f"/api/reservations/{held.json()['id']}/purchase"
    assert_problem(await http.post(buy, headers=user), 401, "UNAUTHORIZED")
    keyed = {**user, "Idempotency-Key": "buy-after-delete"}
    assert_problem(await http.post(buy, headers=keyed), 401, "UNAUTHORIZED")
    assert_problem(await http.get("/api/auth/me", headers=user), 401, "UNAUTHORIZED")


async def rate_limited_key_is_not_replayed(http: httpx.AsyncClient, drop: str) -> None:
    user = auth((await signup(http))["accessToken"])
    for attempt in range(8):
        keyed = {**user, "Idempotency-Key": f"burst-{attempt}"}
        limited = await http.post(f"/api/drops/{drop}/reserve", headers=keyed)
        if limited.status_code == 429:
            break
        assert limited.status_code == 201, limited.text
    else:
        raise AssertionError(f"no 429 within 8 reserves at {RESERVE_LIMIT}")
    assert_problem(limited, 429, "RATE_LIMITED")

    await asyncio.sleep(retry_after(limited))
    again = await http.post(f"/api/drops/{drop}/reserve", headers=keyed)
    assert again.status_code == 201, again.text
    assert "idempotent-replayed" not in again.headers
    # The 201 is the one kept: the same key now replays it.
    replayed = await http.post(f"/api/drops/{drop}/reserve", headers=keyed)
    assert (replayed.status_code, replayed.json()) == (201, again.json())
    assert replayed.headers["idempotent-replayed"] == "true"


async def cancelled_hold_cools_down(http: httpx.AsyncClient, drop: str) -> None:
    user = auth((await signup(http))["accessToken"])
    held = await reserve(http, drop, user)
    assert held.status_code == 201, held.text
    cancelled = await http.delete(f"/api/reservations/{held.json()['id']}", headers=user)
    assert cancelled.status_code == 204, cancelled.text

    cooling = await reserve(http, drop, user)
    assert_problem(cooling, 409, "COOLDOWN")
    assert retry_after(cooling) <= COOLDOWN_SECONDS

    await asyncio.sleep(retry_after(cooling))
    after = await reserve(http, drop, user)
    assert after.status_code == 201, after.text


async def metrics_need_the_token(http: httpx.AsyncClient) -> None:
    assert_problem(await http.get("/metrics"), 401, "UNAUTHORIZED")
    wrong = await http.get("/metrics", headers=auth("x" * 32))
    assert_problem(wrong, 401, "UNAUTHORIZED")
    scraped = await http.get("/metrics", headers=auth(METRICS_TOKEN))
    assert scraped.status_code == 200, scraped.text
    assert scraped.headers["content-type"].startswith("text/plain")
    assert "server" not in scraped.headers
    assert "# TYPE" in scraped.text


async def test_abuse_answers_hold_on_a_real_server(stores: StoreUrls, tmp_path: Path) -> None:
    env = {
        "RATE_LIMITS": "on",
        "RATE_LIMIT_RESERVE": RESERVE_LIMIT,
        "RESERVE_COOLDOWN_SECONDS": str(COOLDOWN_SECONDS),
        "METRICS_TOKEN": METRICS_TOKEN,
    }
    async with (
        running_serve(stores, tmp_path, ADMIN_EMAIL, **env) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as http,
    ):
        login = await http.post(
            "/api/auth/login", json={"email": ADMIN_EMAIL, "password": PASSWORD}
        )
        assert login.status_code == 200, login.text
        drop = (
            await create_drop(http, login.json()["accessToken"], totalStock=50, perUserLimit=10)
        )["id"]
        await metrics_need_the_token(http)
        await deleted_user_is_401(http, stores, drop)
        await rate_limited_key_is_not_replayed(http, drop)
        await cancelled_hold_cools_down(http, drop)
