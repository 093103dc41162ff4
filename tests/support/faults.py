"""Checks shared by the store-fault tests: the 503 shape, time limits, the `check` command."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Awaitable
from pathlib import Path

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import InstrumentedAttribute

from app.container import Container
from app.db.models import Purchase
from app.store import keys
from tests.support.stores import StoreUrls

ROOT = Path(__file__).resolve().parents[2]
# A store fault must be answered fast: a client retries, it must not hang.
ANSWER_SECONDS = 5.0


def assert_unavailable(response: httpx.Response) -> None:
    """The only 5xx the contract allows: 503 SERVICE_UNAVAILABLE as problem+json."""
    assert response.status_code == 503, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "SERVICE_UNAVAILABLE", response.text


async def answered(request: Awaitable[httpx.Response]) -> tuple[httpx.Response, float]:
    """The response and its time in seconds; fails when it takes over ANSWER_SECONDS."""
    started = time.monotonic()
    async with asyncio.timeout(ANSWER_SECONDS):
        response = await request
    return response, time.monotonic() - started


async def hold_state(container: Container, reservation_id: str) -> str | None:
    """ACTIVE / PURCHASING while live, the closed state once ended, None if unknown."""
    ref = keys.parse_hold_id(reservation_id)
    assert ref is not None
    drop_keys = keys.DropKeys(ref.drop_id)
    for field in (drop_keys.holds, drop_keys.closed):
        entry = await container.redis.hget(field, reservation_id)  # type: ignore[misc]
        if entry is not None:
            return str(entry).split("|", 1)[0]
    return None


async def purchase_counts(container: Container, drop_id: str) -> dict[str, int]:
    """Purchase rows per reservation id of one drop, as PostgreSQL has them."""
    return await _purchases_per(container, drop_id, Purchase.reservation_id)


async def buyers(container: Container, drop_id: str) -> dict[str, int]:
    """Purchases per user of one drop."""
    return await _purchases_per(container, drop_id, Purchase.user_id)


async def _purchases_per(
    container: Container, drop_id: str, column: InstrumentedAttribute[str]
) -> dict[str, int]:
    async with container.db.begin() as session:
        rows = await session.execute(
            select(column, func.count()).where(Purchase.drop_id == drop_id).group_by(column)
        )
    return {key: int(count) for key, count in rows.all()}


async def sneakerdrop_check(stores: StoreUrls, data_dir: Path) -> str:
    """Run `sneakerdrop check` against the stores as an operator would; returns its output.

    Fails unless it exits 0 (every drop's invariant holds, Redis agrees with PostgreSQL).
    """
    env = {
        **os.environ,
        "DATABASE_URL": stores.database_url,
        "REDIS_URL": stores.redis_url,
        "DATA_DIR": str(data_dir),
        "JWT_ACCESS_SECRET": "check-access-secret-" + "c" * 32,
        "JWT_REFRESH_SECRET": "check-refresh-secret-" + "d" * 32,
        "LOG_LEVEL": "WARNING",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.cli",
        "check",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(60):
        output, _ = await process.communicate()
    text = output.decode(errors="replace")
    assert process.returncode == 0, f"sneakerdrop check exited {process.returncode}:\n{text}"
    return text
