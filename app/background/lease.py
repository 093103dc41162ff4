"""Leader leases: one holder per deployment for work that must not run twice at once.

Built on redis-py's `Lock` (a token-checked SET NX PX, extended by a script), so
a process that stalls past the lease loses it rather than acting beside a new leader.
"""

from __future__ import annotations

import logging

from redis.asyncio import Redis
from redis.asyncio.lock import Lock
from redis.exceptions import LockError, RedisError

log = logging.getLogger(__name__)


class Lease:
    def __init__(self, redis: Redis, name: str, ttl_seconds: float) -> None:
        self._lock: Lock = redis.lock(name, timeout=ttl_seconds, blocking=False)
        self.name = name
        self.held = False

    async def refresh(self) -> bool:
        """Take the lease if free, extend it if ours. True while this process leads."""
        try:
            if self.held:
                await self._lock.reacquire()
            else:
                self.held = bool(await self._lock.acquire(blocking=False))
                if self.held:
                    log.info("lease acquired", extra={"lease": self.name})
        except (LockError, RedisError):
            if self.held:
                log.warning("lease lost", extra={"lease": self.name})
            self.held = False
        return self.held

    async def release(self) -> None:
        if self.held:
            try:
                await self._lock.release()
            except (LockError, RedisError):
                pass
            self.held = False
