"""Leader leases: one holder per deployment for work that must not run twice at once.

Built on redis-py's `Lock` (a token-checked SET NX PX, extended by a script), so
a process that stalls past the lease loses it rather than acting beside a new leader.
The lease's value names its holder (`<hostname>:<pid>:<random>`), so an operator (or
a partition test) reading the key sees which host and process leads; the random part
keeps two holders' tokens distinct even when a host name and pid repeat.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid

from redis.asyncio import Redis
from redis.asyncio.lock import Lock
from redis.exceptions import LockError, RedisError

from app.store import keys

log = logging.getLogger(__name__)


def holder_token() -> str:
    """The value this process stores in a lease it takes: who it is, then a unique part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"


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
                self.held = bool(await self._lock.acquire(blocking=False, token=holder_token()))
                if self.held:
                    log.info("lease acquired", extra={"lease": self.name})
        except (LockError, RedisError) as exc:
            if self.held:
                log.warning(
                    "lease lost: %s: %s", type(exc).__name__, exc, extra={"lease": self.name}
                )
            self.held = False
        return self.held

    async def release(self) -> None:
        if self.held:
            try:
                await self._lock.release()
            except (LockError, RedisError):
                pass
            self.held = False


def sweeper_lease(redis: Redis, ttl_seconds: float) -> Lease:
    return Lease(redis, keys.SWEEPER_LEASE, ttl_seconds)


def reconciler_lease(redis: Redis, ttl_seconds: float) -> Lease:
    return Lease(redis, keys.RECONCILER_LEASE, ttl_seconds)


def broadcaster_lease(redis: Redis, ttl_seconds: float) -> Lease:
    return Lease(redis, keys.BROADCASTER_LEASE, ttl_seconds)
