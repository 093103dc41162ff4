"""Pushes cross processes on a cluster: two `sneakerdrop serve` with REDIS_CLUSTER=true.

The stock-dirty PUBLISH inside the Lua scripts and the Socket.IO manager's channel
both ride classic pub/sub, which a cluster forwards to every node: a reserve made
through one process reaches a client of each.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from app.embedded.common import free_port
from tests.conftest import make_settings
from tests.support.cluster import LocalCluster
from tests.support.factories import PASSWORD, create_drop, signup
from tests.support.realtime_server import (
    listening,
    log_text,
    reserve,
    start_serve_process,
    stop_serve_processes,
    wait_until,
)
from tests.support.stores import StoreUrls

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(90)]

ADMIN_EMAIL = "cluster-rt-admin@example.com"
START_SECONDS = 60.0  # two processes of two workers each start on a shared 2-core machine


async def ready(process: asyncio.subprocess.Process, url: str, log: Path) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=2) as http:

        async def answers() -> bool:
            if process.returncode is not None:
                raise AssertionError(f"serve exited with {process.returncode}:\n{log_text(log)}")
            try:
                return (await http.get("/readyz")).status_code == 200
            except httpx.TransportError:
                return False

        await wait_until(answers, START_SECONDS, f"{url}/readyz")


async def test_a_reserve_through_one_process_reaches_clients_of_both(
    stores: StoreUrls, redis_cluster: LocalCluster, tmp_path: Path
) -> None:
    settings = make_settings(stores)
    env = {
        "DATABASE_URL": stores.database_url,
        "REDIS_URL": redis_cluster.url,
        "REDIS_CLUSTER": "true",
        "JWT_ACCESS_SECRET": settings.jwt_access_secret or "",
        "JWT_REFRESH_SECRET": settings.jwt_refresh_secret or "",
        "BCRYPT_ROUNDS": "4",
        "RATE_LIMITS": "off",
        "ADMIN_EMAIL": ADMIN_EMAIL,
        "ADMIN_PASSWORD": PASSWORD,
        "DATA_DIR": str(tmp_path / "data"),
        "STOCK_BROADCAST_INTERVAL_MS": "50",
        "RECONCILE_INTERVAL_SECONDS": "3600",
        "LOG_LEVEL": "WARNING",
        "ENV": "test",
    }
    ports = [free_port(), free_port()]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    logs = [tmp_path / f"serve-{name}.log" for name in ("a", "b")]
    processes: list[asyncio.subprocess.Process] = []
    try:
        for port, log in zip(ports, logs, strict=True):
            processes.append(await start_serve_process(port, env, log))
        await asyncio.gather(
            *(ready(p, u, log) for p, u, log in zip(processes, urls, logs, strict=True))
        )
        async with (
            httpx.AsyncClient(base_url=urls[0], timeout=10) as http_a,
            httpx.AsyncClient(base_url=urls[1], timeout=10) as http_b,
        ):
            login = await http_a.post(
                "/api/auth/login", json={"email": ADMIN_EMAIL, "password": PASSWORD}
            )
            assert login.status_code == 200, login.text
            admin = login.json()["accessToken"]
            drop = (await create_drop(http_a, admin, totalStock=10))["id"]
            first, second = await signup(http_a), await signup(http_b)
            async with listening(urls[0]) as on_a, listening(urls[1]) as on_b:
                for client in (on_a, on_b):
                    await client.wait_for(drop, 10)
                await reserve(http_a, drop, first["accessToken"])
                await on_b.wait_for(drop, 9)
                await on_a.wait_for(drop, 9)
                await reserve(http_b, drop, second["accessToken"])
                await on_a.wait_for(drop, 8)
                await on_b.wait_for(drop, 8)
    finally:
        codes = await stop_serve_processes(processes)
    assert codes == [0, 0], [log_text(log)[-2000:] for log in logs]
