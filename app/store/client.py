"""The Redis client: one connection pool per process, cluster-aware."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.store.cluster_client import BoundedRedisCluster
from app.store.entries import parse_entry

# Errors that mean "Redis is not answering"; they become 503, never 500.
REDIS_UNAVAILABLE: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,
    OSError,
)


UPTIME_GRAIN_MS = 1000
CONNECT_TIMEOUT_SECONDS = 3.0  # at most; never longer than the command timeout


@dataclass(frozen=True, slots=True)
class RedisBudget:
    """How one worker's REDIS_MAX_CONNECTIONS is shared by its Redis clients.

    Every client a worker makes is sized here and nowhere else, so that whatever its
    Socket.IO or HTTP clients do, the worker never holds more than the setting:
    - `pipelined`: the scripts' one pipelined connection (app/store/pipelined.py);
    - `socketio_listener`: the Socket.IO manager's subscription to its channel;
    - `socketio_publish`: the manager's publishes, only broadcasts (one per drop per
      STOCK_BROADCAST_INTERVAL_MS), so two connections are plenty;
    - `app_pool`: what is left, a blocking pool for every other command. The expiry
      listener's and the broadcaster's subscriptions borrow their connection from it.
    On a cluster the app pool's size applies to each node.
    """

    app_pool: int
    pipelined: int = 1
    socketio_listener: int = 1
    socketio_publish: int = 2

    @classmethod
    def split(cls, max_connections: int) -> RedisBudget:
        fixed = cls(app_pool=0)
        reserved = fixed.pipelined + fixed.socketio_listener + fixed.socketio_publish
        # The app pool keeps room for its two listeners and some commands (the setting's
        # floor of 8 leaves it 4).
        return cls(app_pool=max(max_connections - reserved, 4))


def create_redis(
    url: str, *, cluster: bool = False, max_connections: int = 64, timeout: float = 5.0
) -> Redis:
    """A decoded-responses client. With REDIS_CLUSTER the cluster client, typed as Redis.

    Every key a script touches shares one drop's hash tag, so scripts run unchanged
    on a cluster. Never more than `max_connections` connections (per node on a cluster).
    """
    options: dict[str, Any] = {
        "decode_responses": True,
        "socket_timeout": timeout,
        # A connect whose SYN is lost (a partition) counts against the same budget: a
        # request must answer 503 within `timeout`, not wait 3 s for a new connection.
        "socket_connect_timeout": min(CONNECT_TIMEOUT_SECONDS, timeout),
        "health_check_interval": 15,
    }
    if cluster:
        client: Any = BoundedRedisCluster.from_url(url, max_connections=max_connections, **options)
        return client  # type: ignore[no-any-return]
    # A blocking pool: a burst beyond max_connections waits for a free connection
    # (up to `timeout`) instead of failing with MaxConnectionsError.
    pool = BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=timeout, **options, **_pool_options()
    )
    return Redis.from_pool(pool)


def _pool_options() -> dict[str, Any]:
    """Turn off redis-py 8's maintenance notifications (a Redis Enterprise feature).

    While they are left on 'auto', redis-py 8.1's async pool skips its check for a
    connection the server closed, so after a Redis restart every idle pooled
    connection failed its next command once: a burst of 503s after Redis was back.
    """
    try:
        from redis.maint_notifications import MaintNotificationsConfig
    except ImportError:  # redis-py before 8 has no such feature and checks connections
        return {}
    return {"maint_notifications_config": MaintNotificationsConfig(enabled=False)}


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


async def redis_now_ms(redis: Redis) -> int:
    """Redis `TIME` in milliseconds: the clock the scripts read."""
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


@dataclass(frozen=True, slots=True)
class ServerStart:
    """When the Redis server (re)started, and which run of it this is."""

    started_ms: int
    run_id: str  # new on every restart; a cluster's nodes' joined; "" when INFO is refused


async def server_start(redis: Redis) -> ServerStart:
    """When the Redis server (re)started, by its own clock, rounded late.

    A hold created before then was reloaded from disk: from the append-only file, which
    may have missed its last second, or from a restored snapshot, which may predate the
    hold's purchase. Such a hold's unit goes back to stock only after PostgreSQL says it
    was not sold. On a cluster, the latest start of any node. When the server will not
    tell (INFO refused), now: every hold then counts as reloaded.
    """
    try:
        info = await redis.info("server")
    except ResponseError:
        info = {}
    now_ms = await redis_now_ms(redis)  # after INFO, so that `now - uptime` is not early
    # uptime_in_seconds is a difference of whole seconds: up to 1 s more than the truth.
    return ServerStart(now_ms - _least_uptime(info) * 1000 + UPTIME_GRAIN_MS, _run_id(info))


async def server_started_ms(redis: Redis) -> int:
    """`server_start(redis).started_ms`: the holds created before it were reloaded."""
    return (await server_start(redis)).started_ms


def reloaded_hold(raw_entry: str, started_ms: int) -> bool:
    """An ACTIVE hold created before Redis last started (see `server_started_ms`)."""
    entry = parse_entry(raw_entry)
    return entry.state == "ACTIVE" and entry.created_at_ms < started_ms


def _node_infos(info: dict[str, Any]) -> list[dict[str, Any]]:
    """A server's INFO, or each node's of a cluster's answer."""
    if "uptime_in_seconds" in info:
        return [info]
    return [v for v in info.values() if isinstance(v, dict) and "uptime_in_seconds" in v]


def _run_id(info: dict[str, Any]) -> str:
    return ",".join(sorted(str(node.get("run_id", "")) for node in _node_infos(info)))


def _least_uptime(info: dict[str, Any]) -> int:
    """`uptime_in_seconds` of a server, or the least of a cluster's per-node answers."""
    return min((int(node["uptime_in_seconds"]) for node in _node_infos(info)), default=0)


async def answers(redis: Redis) -> bool:
    """Whether Redis answers a PING now (readiness): any failure is a no."""
    try:
        return bool(await redis.ping())
    except Exception:
        return False
