"""Signed-out sessions: a marker per session that stops its access tokens at once.

Access tokens are checked without PostgreSQL, so a sign-out (logout, a deleted
account) must be visible in Redis. The marker lives as long as an access token can,
after which every token of that session has expired on its own.
"""

from __future__ import annotations

from redis.asyncio import Redis

from app.store import keys


class SessionStore:
    def __init__(self, redis: Redis, access_token_ttl_seconds: int) -> None:
        self.redis = redis
        self.ttl_seconds = access_token_ttl_seconds

    async def revoke(self, session_id: str) -> None:
        await self.redis.set(keys.revoked_session(session_id), "1", ex=self.ttl_seconds)

    async def is_revoked(self, session_id: str) -> bool:
        return bool(await self.redis.exists(keys.revoked_session(session_id)))

    @staticmethod
    def revoked_key(session_id: str) -> str:
        """The marker's key, for a script that checks it in its own round trip (reserve)."""
        return keys.revoked_session(session_id)
