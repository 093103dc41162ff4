"""Fixtures: real stores for the run, a clean slate per test, the app and a client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from app.config import Settings, load_settings
from app.container import Container
from app.db.migrate import run_migrations
from app.main import create_app
from tests.support.stores import StoreUrls, test_stores

TABLES = "purchases, purchase_claims, refresh_tokens, refresh_families, drops, users"


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
    settings = make_settings(stores)
    from app.db.session import Database
    from app.store.client import create_redis

    db = Database(settings.database_url or "")
    redis = create_redis(settings.redis_url or "")
    try:
        async with db.begin() as session:
            await session.execute(text(f"TRUNCATE {TABLES} CASCADE"))
        await redis.flushdb()
    finally:
        await redis.aclose()
        await db.dispose()


@pytest.fixture
async def app(make_app: AppFactory) -> tuple[httpx.AsyncClient, Container]:
    return await make_app()


@pytest.fixture
def client(app: tuple[httpx.AsyncClient, Container]) -> httpx.AsyncClient:
    return app[0]


@pytest.fixture
def container(app: tuple[httpx.AsyncClient, Container]) -> Container:
    return app[1]
