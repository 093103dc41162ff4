"""The Redis client: one connection pool per process, cluster-aware."""

from __future__ import annotations

import logging
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

# Errors that mean "Redis is not answering"; they become 503, never 500.
REDIS_UNAVAILABLE: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,
    OSError,
)


def create_redis(url: str, *, cluster: bool = False, max_connections: int = 64) -> Redis:
    """A decoded-responses client. With REDIS_CLUSTER the cluster client, typed as Redis.

    Every key a script touches shares one drop's hash tag, so scripts run unchanged
    on a cluster.
    """
    options: dict[str, Any] = {
        "decode_responses": True,
        "socket_timeout": 5,
        "socket_connect_timeout": 3,
        "health_check_interval": 15,
    }
    if cluster:
        client: Any = RedisCluster.from_url(url, **options)
        return client  # type: ignore[no-any-return]
    # A blocking pool: a burst beyond max_connections waits for a free connection
    # (up to `timeout`) instead of failing with MaxConnectionsError.
    pool = BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=5, **options
    )
    return Redis.from_pool(pool)


async def check_eviction_policy(redis: Redis, *, strict: bool) -> str | None:
    """Holds must never be evicted: anything but `noeviction` is refused when `strict`.

    Returns the policy, or None when the server does not allow CONFIG GET (managed
    Redis); the operator is then responsible for it.
    """
    try:
        config = await redis.config_get("maxmemory-policy")
    except ResponseError:
        return None
    policy = str(config.get("maxmemory-policy", ""))
    if policy != "noeviction":
        message = f"Redis maxmemory-policy is {policy!r}; holds could be evicted (use noeviction)"
        if strict:
            raise RuntimeError(message)
        logging.getLogger(__name__).warning(message)
    return policy
