"""Fixtures of the cluster tests: one real Redis Cluster for the session, emptied per test.

The app runs with REDIS_CLUSTER=true and REDIS_URL pointing at one node; PostgreSQL is
the one of the normal `stores` fixture (its tables are emptied by the root conftest).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from app.background.runner import BackgroundTasks
from app.container import Container
from app.main import create_app
from tests.conftest import SHUTDOWN_SECONDS, make_settings
from tests.support.cluster import LocalCluster, local_cluster
from tests.support.stores import StoreUrls


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalCluster]:
    with local_cluster() as cluster:
        yield cluster


@pytest.fixture(autouse=True)
def cluster_slate(redis_cluster: LocalCluster) -> None:
    """Every test starts on an empty, healthy cluster (a failover test may leave a node
    restarting)."""
    redis_cluster.wait_healthy()
    redis_cluster.flush()


CLUSTER_DEFAULTS: dict[str, Any] = {
    "redis_cluster": True,
    "reserve_cooldown_seconds": 0,
}


@dataclass
class ClusterApp:
    client: httpx.AsyncClient
    container: Container
    background: BackgroundTasks


ClusterAppFactory = Callable[..., Awaitable[ClusterApp]]


@pytest.fixture
async def cluster_app(
    stores: StoreUrls, redis_cluster: LocalCluster
) -> AsyncIterator[ClusterAppFactory]:
    """An app with REDIS_CLUSTER=true and REDIS_URL on one node (lifespan and background
    loops running), with settings overrides; stopped after the test."""
    stack = AsyncExitStack()

    async def factory(**overrides: Any) -> ClusterApp:
        settings = make_settings(
            stores, redis_url=redis_cluster.url, **{**CLUSTER_DEFAULTS, **overrides}
        )
        asgi = create_app(settings)
        api = asgi.api
        await stack.enter_async_context(api.router.lifespan_context(api))
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi), base_url="http://test")
        await stack.enter_async_context(client)
        return ClusterApp(client, api.state.container, api.state.background)

    yield factory
    async with asyncio.timeout(SHUTDOWN_SECONDS):
        await stack.aclose()
