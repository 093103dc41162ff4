"""Rate limits kept in Redis, so every API process shares one count."""

from __future__ import annotations

import time

from app.config import RateLimit, Settings
from app.errors import RateLimited
from app.store import keys
from app.store.scripts import ScriptName, Scripts


class RateLimiter:
    def __init__(self, settings: Settings, scripts: Scripts) -> None:
        self.settings = settings
        self.scripts = scripts

    async def hit(self, name: str, subject: str) -> None:
        """Count one call of `name` for `subject`; RateLimited when over the limit."""
        limit: RateLimit = self.settings.limit(name)
        if not limit.enabled:
            return
        window = int(time.time()) // limit.period_seconds
        reply = await self.scripts.run(
            ScriptName.RATE_LIMIT,
            [keys.rate_bucket(name, subject, window)],
            [limit.limit, limit.period_seconds * 1000],
        )
        if reply[0] == "LIMITED":
            retry_ms = int(reply[1])
            raise RateLimited(retry_after_seconds=-(-retry_ms // 1000))
