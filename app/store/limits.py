"""Rate-limit counters in Redis: fixed windows, and the three login limits.

app/services/ratelimit.py decides which limits apply and what a refusal says; this
module owns the key names and runs the scripts (lua/rate_limit.lua,
lua/login_check.lua, lua/login_refund.lua; their headers give the replies).
"""

from __future__ import annotations

from typing import Any

from app.store import keys
from app.store.scripts import ScriptName, Scripts


class LimitStore:
    def __init__(self, scripts: Scripts) -> None:
        self.scripts = scripts

    async def count(
        self, name: str, subject: str, window: int, limit: int, period_ms: int
    ) -> list[Any]:
        """One call counted in `subject`'s window: ['ALLOWED', left] or ['LIMITED', ms]."""
        bucket = keys.rate_bucket(name, subject, window)
        return await self.scripts.run(ScriptName.RATE_LIMIT, [bucket], [limit, period_ms])

    @staticmethod
    def login_keys(email: str, address: str, pair_window: int, account_window: int) -> list[str]:
        """The keys one login attempt is counted in: handed back to check and refund."""
        return keys.login_limits(email, address, pair_window, account_window)

    async def login_check(self, login_keys: list[str], args: list[Any]) -> list[Any]:
        return await self.scripts.run(ScriptName.LOGIN_CHECK, login_keys, args)

    async def login_refund(self, login_keys: list[str], args: list[Any]) -> None:
        await self.scripts.run(ScriptName.LOGIN_REFUND, login_keys, args)
