"""A `sneakerdrop serve` SIGKILLed mid-admission, with its access leader's lease still
held; another serve takes over: no position skipped or admitted twice, `served` never
goes back.

The tickets join through the service on the same stores (a container without background
loops, so no leader of the test's own competes); the serve processes do all admitting.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import httpx
import pytest

from app.container import build_container
from app.embedded.common import free_port
from app.store.keys import ACCESS_LEASE, DropKeys
from tests.conftest import make_settings
from tests.support.access import bulk_users, eventually, queue_drop, queue_snapshot
from tests.support.factories import PASSWORD
from tests.support.realtime_server import start_serve_process, wait_ready
from tests.support.serve import running_serve, serve_env
from tests.support.stores import StoreUrls

ADMIN_EMAIL = "access-killed-admin@example.com"
TICKETS = 6000
RATE = 100_000  # per minute


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_a_serve_killed_mid_admission_is_replaced_without_skipping_or_repeating(
    stores: StoreUrls, tmp_path: Path
) -> None:
    container = await build_container(make_settings(stores))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    first_dir = tmp_path / "first"
    first_dir.mkdir()
    log = first_dir / "serve.log"
    env = serve_env(stores, first_dir / "data", ADMIN_EMAIL)
    process = await start_serve_process(port, env, log)
    served_seen: list[int] = []
    done = asyncio.Event()
    key = DropKeys("-").q  # replaced below

    async def watch() -> None:
        while not done.is_set():
            served_seen.append(int(await container.redis.hget(key, "served") or 0))
            await asyncio.sleep(0.005)

    watcher: asyncio.Task[None] | None = None
    try:
        await wait_ready(process, url, log)
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            login = await http.post(
                "/api/auth/login", json={"email": ADMIN_EMAIL, "password": PASSWORD}
            )
            assert login.status_code == 200, login.text
            drop = await queue_drop(
                http, login.json()["accessToken"], starts_in=5, admit_per_minute=RATE
            )
        drop_id = drop["id"]
        key = DropKeys(drop_id).q
        for user in await bulk_users(container, TICKETS):
            ticket, _ = await container.access_service.join(user, drop_id)
            assert ticket.position is None, "joined after the start: raise starts_in"
        watcher = asyncio.create_task(watch())

        async def well_under_way() -> bool:
            return bool(served_seen) and served_seen[-1] >= TICKETS // 4

        await eventually(well_under_way, 20, every=0.005)
        os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
        killed_at = served_seen[-1]
        assert killed_at < TICKETS, "admission finished before the kill: raise TICKETS"
        assert await container.redis.exists(ACCESS_LEASE), "the dead leader's lease is held"

        second = tmp_path / "second"
        second.mkdir()
        async with running_serve(stores, second, ADMIN_EMAIL):

            async def finished() -> bool:
                return bool(served_seen) and served_seen[-1] >= TICKETS

            await eventually(finished, 30, every=0.05)
        done.set()
        await watcher

        snap = await queue_snapshot(container, drop_id)
        assert snap.served == TICKETS
        assert all(snap.admitted_ms), "a position was skipped"
        assert snap.admitted_ms == sorted(snap.admitted_ms), "admitted out of position order"
        assert served_seen == sorted(served_seen), "served went back"
        # A ticket admitted twice would have had its pass added again: one each.
        passes = await container.redis.zrange(DropKeys(drop_id).q_passes, 0, -1)
        assert sorted(str(p) for p in passes) == sorted(snap.entry_ids)
        # Admission after the takeover carried on from where the dead leader stopped.
        resumed = [m for m in snap.admitted_ms[killed_at:] if m]
        assert min(resumed) > max(snap.admitted_ms[:killed_at])
        print(
            f"serve killed at served={killed_at} of {TICKETS}; the new serve admitted "
            f"{TICKETS - killed_at} more, "
            f"{(min(resumed) - max(snap.admitted_ms[:killed_at])) / 1000:.1f} s after the kill"
        )
    finally:
        done.set()
        if watcher is not None and not watcher.done():
            await watcher
        if process.returncode is None:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
        await container.close()
