"""Where each worker's internal Socket.IO listener is: `worker id -> host:port`, in Redis.

A worker registers its address with a TTL and refreshes it (SET, not EXPIRE, so a key
lost to a Redis restart or flush comes back at the next refresh); a worker that dies
without deregistering disappears after the TTL. Ids are random per start, so an
address never changes under an id and readers may cache it for as long as they like.
"""

from __future__ import annotations

from redis.asyncio import Redis

from app.store import keys


class WorkerRegistry:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def register(self, worker_id: str, address: str, ttl_seconds: int) -> None:
        await self._redis.set(keys.worker_address(worker_id), address, ex=ttl_seconds)

    async def address_of(self, worker_id: str) -> str | None:
        value = await self._redis.get(keys.worker_address(worker_id))
        return value if isinstance(value, str) else None  # a decoded-responses client

    async def deregister(self, worker_id: str) -> None:
        await self._redis.delete(keys.worker_address(worker_id))
