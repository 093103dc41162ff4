"""Idempotency records: one per (user, request scope), pending then done.

A record is claimed with SET NX while the first request runs, as a lease of a few
seconds that the request renews while it runs: a first attempt that died lets a repeat
run within `LEASE_MS`. It is then replaced by the final response, kept for a day.
app/api/idempotency.py decides what is kept.
"""

from __future__ import annotations

from typing import Any

import orjson
from redis.asyncio import Redis

from app.store import keys

KEEP_SECONDS = 24 * 3600
LEASE_MS = 3_000  # a first attempt that died leaves its marker at most this long
RENEW_SECONDS = 1.0  # a running first attempt renews its lease this often


class IdempotencyStore:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    @staticmethod
    def key(user_id: str, scope_digest: str) -> str:
        return keys.idempotency(user_id, scope_digest)

    async def claim(self, key: str, fingerprint: str) -> bool:
        """Mark the request as running; False when a record exists already."""
        pending = orjson.dumps({"state": "pending", "fp": fingerprint})
        return bool(await self.redis.set(key, pending, nx=True, px=LEASE_MS))

    async def renew(self, key: str) -> None:
        """Extend a running request's lease. GT: a kept answer (24 h) is never shortened."""
        await self.redis.pexpire(key, LEASE_MS, gt=True)

    async def read(self, key: str) -> dict[str, Any] | None:
        raw = await self.redis.get(key)
        return None if raw is None else dict(orjson.loads(raw))

    async def keep(self, key: str, record: dict[str, Any]) -> None:
        await self.redis.set(key, orjson.dumps(record), ex=KEEP_SECONDS)

    async def forget(self, key: str) -> None:
        await self.redis.delete(key)
