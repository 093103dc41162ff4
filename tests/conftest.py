"""Fixtures: real stores for the run, a clean slate per test, the app and a client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from graphlib import TopologicalSorter
from typing import Any

import asyncpg
import httpx
import pytest

from app.config import Settings, load_settings
from app.container import Container
from app.db.migrate import run_migrations
from app.main import create_app
from tests.support.latency_proxy import LatencyProxy
from tests.support.stores import StoreUrls, _plain, test_stores


@pytest.fixture(scope="session")
def stores() -> Iterator[StoreUrls]:
    with test_stores() as urls:
        run_migrations(urls.database_url)
        yield urls


def make_settings(stores: StoreUrls, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "env": "test",
        "database_url": stores.database_url,
        "redis_url": stores.redis_url,
        "jwt_access_secret": "test-access-secret-" + "a" * 32,
        "jwt_refresh_secret": "test-refresh-secret-" + "b" * 32,
        "bcrypt_rounds": 4,
        "rate_limits": "off",
        "log_level": "WARNING",
        "reconcile_interval_seconds": 3600,
        "stock_broadcast_interval_ms": 50,
        "drops_cache_ms": 0,  # tests read the list right after changing it
        "gc_freeze": False,  # many apps share the test process; freezing would keep their garbage
        # No hand-over of Socket.IO sessions between workers: an app here is one process, and
        # the internal listener would cost each app ~0.2 s to stop (uvicorn's 0.1 s tick).
        # Hand-over is tested where it happens: tests/e2e/test_socketio_workers.py (`serve`
        # keeps the default) and its in-process test that sets an address.
        "socket_forward_host": "off",
    }
    values.update(overrides)
    return load_settings(_env_file=None, **values)


AppFactory = Callable[..., Awaitable[tuple[httpx.AsyncClient, Container]]]


@pytest.fixture
async def make_app(stores: StoreUrls) -> AsyncIterator[AppFactory]:
    """Start an app (lifespan, background loops) with settings overrides; stopped after the test."""
    stack = AsyncExitStack()

    async def factory(**overrides: Any) -> tuple[httpx.AsyncClient, Container]:
        asgi = create_app(make_settings(stores, **overrides))
        api = asgi.api
        await stack.enter_async_context(api.router.lifespan_context(api))
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi), base_url="http://test")
        await stack.enter_async_context(client)
        return client, api.state.container

    yield factory
    try:
        async with asyncio.timeout(SHUTDOWN_SECONDS):
            await stack.aclose()
    except TimeoutError:
        _dump_tasks()
        raise


SHUTDOWN_SECONDS = 20


def _dump_tasks() -> None:
    """Show what an app's shutdown is stuck on."""
    for task in asyncio.all_tasks():
        print(f"--- task {task.get_name()}: {task.get_coro()}")
        task.print_stack(limit=8)


@pytest.fixture(autouse=True)
async def clean_slate(request: pytest.FixtureRequest) -> None:
    """Empty tables and Redis before each test that uses the stores."""
    if "stores" not in request.fixturenames:
        return
    stores: StoreUrls = request.getfixturevalue("stores")
    from app.store.client import create_redis

    conn = await asyncpg.connect(_plain(stores.database_url))
    redis = create_redis(stores.redis_url)
    try:
        await conn.execute(await _emptying_sql(conn, stores.database_url))
        await redis.flushdb()
    finally:
        await redis.aclose()
        await conn.close()


_EMPTYING: dict[str, str] = {}  # database URL -> its DELETE statements


async def _emptying_sql(conn: asyncpg.Connection, url: str) -> str:
    """DELETE FROM every table the migrations made, each before the tables it references.

    DELETE rather than TRUNCATE: the tables hold a test's worth of rows, which a DELETE
    empties in about a millisecond where a TRUNCATE of the tables costs 15 ms (new files
    for each); per test that adds up. The order comes from the schema, once per database,
    so a new table is emptied too."""
    if url not in _EMPTYING:
        rows = await conn.fetch(
            """
            SELECT c.relname AS name,
                   array(SELECT DISTINCT r.relname FROM pg_constraint f
                         JOIN pg_class r ON r.oid = f.confrelid
                         WHERE f.conrelid = c.oid AND f.contype = 'f' AND f.confrelid <> c.oid)
                   AS refers_to
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')
              AND c.relname <> 'alembic_version'
            """
        )
        graph = {row["name"]: set(row["refers_to"]) for row in rows}
        referenced_first = list(TopologicalSorter(graph).static_order())
        _EMPTYING[url] = "".join(f'DELETE FROM "{name}";' for name in reversed(referenced_first))
    return _EMPTYING[url]


@pytest.fixture
async def app(make_app: AppFactory) -> tuple[httpx.AsyncClient, Container]:
    return await make_app()


@pytest.fixture
async def pg_proxy(stores: StoreUrls) -> AsyncIterator[LatencyProxy]:
    """A proxy in front of PostgreSQL that can slow or cut what the app sends it."""
    proxy = LatencyProxy(stores.database_url)
    await proxy.start()
    yield proxy
    await proxy.close()


@pytest.fixture
def client(app: tuple[httpx.AsyncClient, Container]) -> httpx.AsyncClient:
    return app[0]


@pytest.fixture
def container(app: tuple[httpx.AsyncClient, Container]) -> Container:
    return app[1]
