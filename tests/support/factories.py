"""Plain async factories and checks shared by the tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from app.background.reconciler import Reconciler
from app.container import Container

PASSWORD = "correct-horse-battery"
_counter = iter(range(1, 10**9))


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def signup(
    client: httpx.AsyncClient, email: str | None = None, **extra: Any
) -> dict[str, Any]:
    email = email or f"user{next(_counter)}@example.com"
    response = await client.post(
        "/api/auth/signup", json={"email": email, "password": PASSWORD, **extra}
    )
    assert response.status_code == 201, response.text
    session: dict[str, Any] = response.json()
    return session


async def admin_token(client: httpx.AsyncClient, container: Container) -> str:
    email = f"admin{next(_counter)}@example.com"
    await container.auth_service.ensure_admin(email, PASSWORD)
    response = await client.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    token: str = response.json()["accessToken"]
    return token


async def create_drop(client: httpx.AsyncClient, admin: str, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": "Test Runner", "priceCents": 12000, "totalStock": 10}
    body.update(fields)
    for key in ("startsAt", "endsAt"):
        if isinstance(body.get(key), datetime):
            body[key] = body[key].isoformat().replace("+00:00", "Z")
    response = await client.post("/api/drops", json=body, headers=auth(admin))
    assert response.status_code == 201, response.text
    drop: dict[str, Any] = response.json()
    return drop


def in_future(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


async def assert_invariant(container: Container, drop_id: str | None = None) -> None:
    """available + live holds + purchases == total, and Redis agrees with PostgreSQL."""
    checks = await Reconciler(container.db, container.drop_store, container.hold_store).check()
    for check in checks:
        if drop_id is not None and check.drop_id != drop_id:
            continue
        assert check.total is not None, f"drop {check.drop_id} missing from Redis"
        assert check.available >= 0, check
        assert check.available + check.live_holds + check.sold_pg == check.total_pg, check
        assert check.sold == check.sold_pg, check
        assert check.healthy, check
