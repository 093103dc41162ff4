"""Pushes cross processes: two `sneakerdrop serve` processes on the same stores.

A client connected to one process sees the `stock_update` caused by a reserve made
through the other. With a client on each process and a reserve through each, one of
the deliveries always crosses processes, whichever process leads the broadcaster.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from app.container import build_container
from app.embedded.common import free_port
from tests.conftest import make_settings
from tests.support.factories import PASSWORD, assert_invariant, auth, create_drop, signup
from tests.support.realtime_server import (
    available_via_get,
    listening,
    log_text,
    reserve,
    start_serve_process,
    stop_serve_processes,
    wait_ready,
)
from tests.support.serve import serve_env
from tests.support.stores import StoreUrls

pytestmark = pytest.mark.timeout(60)

ADMIN_EMAIL = "rt-admin@example.com"


def _env(stores: StoreUrls, data_dir: Path) -> dict[str, str]:
    return {
        **serve_env(stores, data_dir, ADMIN_EMAIL),
        "STOCK_BROADCAST_INTERVAL_MS": "50",
    }


async def test_a_reserve_through_one_process_reaches_clients_of_the_other(
    stores: StoreUrls, tmp_path: Path
) -> None:
    env = _env(stores, tmp_path / "data")
    ports = [free_port(), free_port()]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    logs = [tmp_path / f"serve-{name}.log" for name in ("a", "b")]
    processes: list[asyncio.subprocess.Process] = []
    container = await build_container(make_settings(stores))
    try:
        for port, log in zip(ports, logs, strict=True):
            processes.append(await start_serve_process(port, env, log))
        await asyncio.gather(
            *(wait_ready(p, u, log) for p, u, log in zip(processes, urls, logs, strict=True))
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
                    await client.wait_for(drop, 10)  # B's snapshot knows A's new drop

                await reserve(http_a, drop, first["accessToken"])
                await on_b.wait_for(drop, 9)
                await on_a.wait_for(drop, 9)

                await reserve(http_b, drop, second["accessToken"])
                await on_a.wait_for(drop, 8)
                await on_b.wait_for(drop, 8)

            assert await available_via_get(http_b, drop) == 8
            mine = await http_b.get("/api/me/reservations", headers=auth(first["accessToken"]))
            assert mine.status_code == 200
            assert len(mine.json()) == 1
        await assert_invariant(container, drop)
    finally:
        await container.close()
        codes = await stop_serve_processes(processes)
    assert codes == [0, 0], [log_text(log)[-2000:] for log in logs]  # None: SIGTERM hung
