"""EmbeddedStores against the real embedded PostgreSQL and Valkey binaries."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from app.embedded import DataDirInUse, EmbeddedStores
from tests.support.processes import alive, servers_using

ROOT = Path(__file__).resolve().parents[2]


async def _write(database_url: str, redis_url: str) -> None:
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute("CREATE TABLE kept (value text)")
        await conn.execute("INSERT INTO kept VALUES ('pg survives')")
    finally:
        await conn.close()
    client = aioredis.from_url(redis_url)
    try:
        await client.set("kept", "redis survives")
        config = await client.config_get("notify-keyspace-events")
        assert set(config["notify-keyspace-events"]) == set("xE")
        assert (await client.config_get("appendonly"))["appendonly"] == "yes"
        assert (await client.config_get("maxmemory-policy"))["maxmemory-policy"] == "noeviction"
    finally:
        await client.aclose()


async def _read(database_url: str, redis_url: str) -> tuple[str | None, bytes | None]:
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        pg_value = await conn.fetchval("SELECT value FROM kept")
    finally:
        await conn.close()
    client = aioredis.from_url(redis_url)
    try:
        redis_value = await client.get("kept")
    finally:
        await client.aclose()
    return pg_value, redis_value


async def test_start_stop_restart_keeps_data(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with EmbeddedStores(data_dir) as stores:
        database_url, redis_url = stores.start(postgres=True, redis=True)
        assert database_url is not None
        assert redis_url is not None
        assert database_url.startswith("postgresql+asyncpg://postgres@127.0.0.1:")
        assert database_url.endswith("/sneakerdrop")
        assert redis_url.startswith("redis://127.0.0.1:")
        pids = [stores.postgres_pid, stores.valkey_pid]
        assert all(pid is not None and alive(pid) for pid in pids)
        await _write(database_url, redis_url)

        with pytest.raises(
            DataDirInUse, match=f"already using DATA_DIR {re.escape(str(data_dir))}"
        ) as info:
            EmbeddedStores(data_dir).start(postgres=True, redis=False)
        assert f"pid {os.getpid()}" in str(info.value)

    assert not any(alive(pid) for pid in pids if pid is not None)
    assert servers_using(data_dir) == []
    stores.stop()  # idempotent

    with EmbeddedStores(data_dir) as again:
        database_url, redis_url = again.start(postgres=True, redis=True)
        assert database_url is not None
        assert redis_url is not None
        assert await _read(database_url, redis_url) == ("pg survives", b"redis survives")
    assert servers_using(data_dir) == []


async def test_only_what_is_asked(tmp_path: Path) -> None:
    with EmbeddedStores(tmp_path / "data") as stores:
        database_url, redis_url = stores.start(postgres=False, redis=True)
        assert database_url is None
        assert redis_url is not None
        assert stores.postgres_pid is None
        assert not (tmp_path / "data" / "postgres").exists()
    with EmbeddedStores(tmp_path / "none") as stores:
        assert stores.start(postgres=False, redis=False) == (None, None)


_HOLDER = """
import sys, time
from app.embedded import EmbeddedStores
stores = EmbeddedStores(sys.argv[1])
database_url, redis_url = stores.start(postgres=True, redis=True)
print(database_url, redis_url, flush=True)
time.sleep(600)
"""


async def test_restart_after_a_crash(tmp_path: Path) -> None:
    """A SIGKILLed sneakerdrop leaves its servers running: the next start takes over."""
    data_dir = tmp_path / "data"
    holder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _HOLDER,
        str(data_dir),
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert holder.stdout is not None
        line = await asyncio.wait_for(holder.stdout.readline(), timeout=60)
        database_url, redis_url = line.decode().split()
        await _write(database_url, redis_url)
        with pytest.raises(DataDirInUse, match=f"pid {holder.pid}"):
            EmbeddedStores(data_dir).start(postgres=False, redis=True)
    finally:
        holder.kill()  # SIGKILL: no chance to stop anything
        await holder.wait()
    leftovers = servers_using(data_dir)
    assert leftovers, "the servers outlive a SIGKILLed owner (their own sessions)"

    with EmbeddedStores(data_dir) as stores:
        database_url, redis_url = stores.start(postgres=True, redis=True)
        assert not any(alive(pid) for pid in leftovers)
        assert await _read(database_url, redis_url) == ("pg survives", b"redis survives")
    assert servers_using(data_dir) == []
