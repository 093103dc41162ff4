"""Login limits on a real `sneakerdrop serve` with its default workers (one per core).

The failed-login counts live in Redis, so they hold whichever worker answers; a
stranger's guesses from one address never lock the owner (an admin here) out from
another; and each worker hashes in at most PASSWORD_HASH_PROCESSES processes in the
SCHED_IDLE class, read from the kernel for the live worker processes.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from app.embedded.common import free_port
from tests.support.factories import PASSWORD
from tests.support.realtime_server import (
    log_text,
    start_serve_process,
    stop_serve_processes,
    wait_ready,
)
from tests.support.serve import serve_env
from tests.support.stores import StoreUrls

pytestmark = pytest.mark.timeout(90)

ADMIN_EMAIL = "limits-admin@example.com"
STRANGER, OWNER_HOME, OWNER_AWAY = "198.51.100.66", "203.0.113.10", "203.0.113.11"


def _env(stores: StoreUrls, data_dir: Path) -> dict[str, str]:
    return {
        **serve_env(stores, data_dir, ADMIN_EMAIL),
        "RATE_LIMITS": "on",
        "TRUSTED_PROXIES": "127.0.0.1",
    }


async def _login(http: httpx.AsyncClient, password: str, address: str) -> httpx.Response:
    return await http.post(
        "/api/auth/login",
        json={"email": ADMIN_EMAIL, "password": password},
        headers={"x-forwarded-for": address},
    )


# multiprocessing's own processes beside the workers: fork servers, resource trackers.
HELPERS = re.compile(r"multiprocessing\.(forkserver|resource_tracker)")


def _idle(process: psutil.Process) -> bool:
    try:
        return os.sched_getscheduler(process.pid) == os.SCHED_IDLE
    except OSError:  # it ended meanwhile
        return False


def _hash_processes_per_worker(serve_pid: int) -> dict[int, int]:
    """For each worker of `serve`, its descendants in the password-hash processes'
    scheduling class (they are children of the worker's multiprocessing fork server)."""
    workers = [
        child
        for child in psutil.Process(serve_pid).children(recursive=True)
        if not _idle(child) and not HELPERS.search(" ".join(child.cmdline()))
    ]
    return {
        worker.pid: sum(_idle(process) for process in worker.children(recursive=True))
        for worker in workers
    }


async def test_a_strangers_guesses_do_not_lock_the_admin_out_of_serve(
    stores: StoreUrls, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    process = await start_serve_process(port, _env(stores, tmp_path / "data"), log)
    try:
        await wait_ready(process, url, log)
        left = 60 - time.time() % 60  # the limits' fixed minute: start well inside one
        if left < 15:
            await asyncio.sleep(left + 0.1)
        # Separate connections, so uvicorn's workers share the requests between them.
        guesses = [httpx.AsyncClient(base_url=url, timeout=10) for _ in range(4)]
        try:
            for n in range(10):  # RATE_LIMIT_LOGIN's default: 10 failures a minute
                bad = await _login(guesses[n % 4], "guess", STRANGER)
                assert bad.status_code == 401, bad.text
            refused = await _login(guesses[0], PASSWORD, STRANGER)
            assert refused.status_code == 429, refused.text
            assert refused.json()["code"] == "RATE_LIMITED"
            assert int(refused.headers["retry-after"]) >= 1
            for client, address in ((guesses[1], OWNER_HOME), (guesses[2], OWNER_AWAY)):
                owner = await _login(client, PASSWORD, address)
                assert owner.status_code == 200, owner.text
                assert owner.json()["user"]["role"] == "admin"
        finally:
            await asyncio.gather(*(client.aclose() for client in guesses))

        if sys.platform == "linux":
            lowered = _hash_processes_per_worker(process.pid)
            assert sum(lowered.values()) >= 1, lowered  # some worker checked a password
            assert all(count <= 1 for count in lowered.values()), lowered  # 1 process each
    finally:
        codes = await stop_serve_processes([process])
    assert codes == [0], log_text(log)[-2000:]
