"""Idempotency records: one per (user, request scope), pending then done.

A record is claimed with SET NX while the first request runs (with a short expiry,
so a first attempt that died lets a repeat run on its own), then replaced by the
final response, kept for a day. app/api/idempotency.py decides what is kept.
"""

from __future__ import annotations

from typing import Any

import orjson
from redis.asyncio import Redis

from app.store import keys

KEEP_SECONDS = 24 * 3600
PENDING_MS = 30_000  # a first attempt that died leaves its marker at most this long


class IdempotencyStore:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    @staticmethod
    def key(user_id: str, scope_digest: str) -> str:
        return keys.idempotency(user_id, scope_digest)

    async def claim(self, key: str, fingerprint: str) -> bool:
        """Mark the request as running; False when a record exists already."""
        pending = orjson.dumps({"state": "pending", "fp": fingerprint})
        return bool(await self.redis.set(key, pending, nx=True, px=PENDING_MS))

    async def read(self, key: str) -> dict[str, Any] | None:
        raw = await self.redis.get(key)
        return None if raw is None else dict(orjson.loads(raw))

    async def keep(self, key: str, record: dict[str, Any]) -> None:
        await self.redis.set(key, orjson.dumps(record), ex=KEEP_SECONDS)

    async def forget(self, key: str) -> None:
        await self.redis.delete(key)
