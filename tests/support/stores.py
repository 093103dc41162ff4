"""The real PostgreSQL and Redis the tests run against.

With DATABASE_URL and REDIS_URL set, the tests use those servers: a fresh
database is created on the PostgreSQL server for the run and dropped after it,
and the Redis database of REDIS_URL is FLUSHed between tests (point it at a
spare database number). Without them, embedded servers are started in a
temporary folder for the run.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from app.config import Settings
from app.embedded import EmbeddedStores


@dataclass(frozen=True)
class StoreUrls:
    database_url: str  # postgresql+asyncpg://...
    redis_url: str


def _plain(url: str) -> str:
    return str(make_url(url).set(drivername="postgresql").render_as_string(hide_password=False))


async def _admin_sql(server_url: str, sql: str) -> None:
    conn = await asyncpg.connect(_plain(server_url))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextmanager
def test_stores() -> Iterator[StoreUrls]:
    given = Settings(_env_file=None)  # type: ignore[call-arg]
    embedded: EmbeddedStores | None = None
    tmp: tempfile.TemporaryDirectory[str] | None = None
    database_url, redis_url = given.database_url, given.redis_url
    if database_url is None or redis_url is None:
        tmp = tempfile.TemporaryDirectory(prefix="sneakerdrop-test-")
        os.chmod(tmp.name, 0o755)  # the embedded PostgreSQL's own user must reach it
        embedded = EmbeddedStores(Path(tmp.name) / "data")
        started_db, started_redis = embedded.start(
            postgres=database_url is None, redis=redis_url is None
        )
        database_url = database_url or started_db
        redis_url = redis_url or started_redis
    assert database_url
    assert redis_url
    name = f"sneakerdrop_test_{secrets.token_hex(4)}"
    server = make_url(database_url)
    asyncio.run(
        _admin_sql(
            str(server.set(database="postgres").render_as_string(False)),
            f'CREATE DATABASE "{name}"',
        )
    )
    test_db = str(server.set(database=name).render_as_string(hide_password=False))
    try:
        yield StoreUrls(test_db, redis_url)
    finally:
        try:
            asyncio.run(
                _admin_sql(
                    str(server.set(database="postgres").render_as_string(False)),
                    f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
                )
            )
        finally:
            if embedded is not None:
                embedded.stop()
            if tmp is not None:
                tmp.cleanup()
