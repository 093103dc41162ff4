"""The cluster client with a bounded wait for a connection, as the one-server pool has.

redis-py's asyncio `RedisCluster` gives each node at most `max_connections`
connections and raises MaxConnectionsError at once when a command finds them all
busy: a burst of 390 concurrent reserves on a 3-primary cluster answered 84 of them
503. The one-server client uses a BlockingConnectionPool that waits instead. Here
commands wait on a semaphore sized below the per-node cap (room is kept for
subscriptions, which take their connections apart; a pipeline waits like a
command), so a command never finds its node's pool full; a wait longer than the command timeout still
fails as a ConnectionError (503), as the blocking pool's does.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import RedisCluster
from redis.asyncio.cluster import ClusterPipeline
from redis.exceptions import ConnectionError as RedisConnectionError

RESERVED_CONNECTIONS = 4  # per node: pipelines and pub/sub use the node pools directly


class BoundedRedisCluster(RedisCluster):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        per_node = int(kwargs.get("max_connections") or 100)
        self._slots = asyncio.Semaphore(max(per_node - RESERVED_CONNECTIONS, 1))
        self._wait_seconds = float(kwargs.get("socket_timeout") or 5.0)

    async def _acquire(self) -> None:
        try:
            async with asyncio.timeout(self._wait_seconds):
                await self._slots.acquire()
        except TimeoutError:
            raise RedisConnectionError("no free Redis connection in time") from None

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        await self._acquire()
        try:
            return await super().execute_command(*args, **kwargs)
        finally:
            self._slots.release()

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> ClusterPipeline:
        """A pipeline whose `execute` waits its turn too (it holds at most one
        connection per node, like a command holds one)."""
        pipe = super().pipeline(transaction, shard_hint)
        execute = pipe.execute

        async def bounded(*args: Any, **kwargs: Any) -> Any:
            await self._acquire()
            try:
                return await execute(*args, **kwargs)
            finally:
                self._slots.release()

        pipe.execute = bounded  # type: ignore[method-assign]
        return pipe
