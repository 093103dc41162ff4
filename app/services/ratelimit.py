"""Rate limits kept in Redis, so every API process shares one count.

Logins have three limits (the contract's RATE_LIMIT_LOGIN_IP, RATE_LIMIT_LOGIN and
RATE_LIMIT_LOGIN_ACCOUNT), checked in `login_attempt` before the password costs a
bcrypt hash:

1. attempts from one client address, every attempt counted;
2. failed logins of one account from one address: a stranger's guesses lock out only
   the stranger's address, never the owner signing in from another;
3. failed logins of one account from every address together, the backstop against a
   guesser spread over many addresses. When it trips, only addresses that signed in to
   the account successfully in the last `KNOWN_ADDRESS_DAYS` still get a try: the owner
   at home or on a phone they used before keeps signing in through an attack, while the
   guesser's fresh addresses do not; an owner on a never-seen address waits for the
   window to end, as everyone else does.

Every refusal is the same 429 (same detail, Retry-After to the end of the longest
window), so an answer never says which limit fired.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from redis.exceptions import RedisError

from app.config import RateLimit, Settings
from app.errors import InvalidCredentials, RateLimited
from app.store.limits import LimitStore

log = logging.getLogger(__name__)

LOGIN_LIMITED = "Too many login attempts; try again later"
LOGIN_LIMITS = ("login_ip", "login", "login_account")
KNOWN_ADDRESS_DAYS = 30  # a successful login makes its address known this long
KNOWN_ADDRESSES = 20  # per account; the least recent are forgotten first
DAY_MS = 86_400_000


class RateLimiter:
    def __init__(self, settings: Settings, store: LimitStore) -> None:
        self.settings = settings
        self.store = store

    async def hit(self, name: str, subject: str) -> None:
        """Count one call of `name` for `subject`; RateLimited when over the limit."""
        limit = self.settings.limit(name)
        if not limit.enabled:
            return
        reply = await self._count(name, limit, subject, time.time())
        if reply[0] == "LIMITED":
            retry_ms = int(reply[1])
            raise RateLimited(retry_after_seconds=-(-retry_ms // 1000))

    @asynccontextmanager
    async def login_attempt(self, email: str, address: str) -> AsyncIterator[None]:
        """Let one login attempt (the body: the password check) run, or 429.

        The attempt is counted as a failure of the account before the body runs (see
        lua/login_check.lua) and taken back when the body does not end in
        InvalidCredentials: a right password, or no verdict at all (a full hash queue,
        a store error, a dropped connection).
        """
        now = time.time()
        per_ip = self.settings.limit("login_ip")
        if per_ip.enabled and (await self._count("login_ip", per_ip, address, now))[0] == "LIMITED":
            raise self._login_limited(now)
        pair, account = self.settings.limit("login"), self.settings.limit("login_account")
        if not pair.enabled and not account.enabled:
            yield
            return
        limit_keys = self.store.login_keys(
            email, address, _window(pair, now), _window(account, now)
        )
        known_since_ms = int((now - KNOWN_ADDRESS_DAYS * 86_400) * 1000)
        reply = await self.store.login_check(
            limit_keys,
            [
                pair.limit,
                pair.period_seconds * 1000,
                account.limit,
                account.period_seconds * 1000,
                address,
                known_since_ms,
            ],
        )
        if reply[0] == "LIMITED":
            raise self._login_limited(now)
        try:
            yield
        except InvalidCredentials:
            raise  # the failure counted above stands
        except RateLimited as exc:  # the hash queue is full: the same answer as every limit
            await self._refund(limit_keys, "")
            raise RateLimited(exc.retry_after_seconds, LOGIN_LIMITED) from None
        except BaseException:
            await self._refund(limit_keys, "")
            raise
        await self._refund(limit_keys, address)

    async def _count(self, name: str, limit: RateLimit, subject: str, now: float) -> list[Any]:
        """One call counted in `subject`'s fixed window: {'ALLOWED', left} or {'LIMITED', ms}."""
        window = _window(limit, now)
        return await self.store.count(
            name, subject, window, limit.limit, limit.period_seconds * 1000
        )

    async def _refund(self, limit_keys: list[str], address: str) -> None:
        """Best effort: a refund Redis did not take leaves one failure too many counted."""
        try:
            await self.store.login_refund(
                limit_keys,
                [address, int(time.time() * 1000), KNOWN_ADDRESS_DAYS * DAY_MS, KNOWN_ADDRESSES],
            )
        except (RedisError, OSError) as exc:  # the store's own fault: the caller's error wins
            log.warning("login limit refund failed: %s", exc)

    def _login_limited(self, now: float) -> RateLimited:
        """One answer for every login limit: Retry-After runs to the end of the longest
        enabled window, so its value does not tell the limits apart either."""
        retry = 1.0
        for name in LOGIN_LIMITS:
            limit = self.settings.limit(name)
            if limit.enabled:
                retry = max(retry, limit.period_seconds - now % limit.period_seconds)
        return RateLimited(math.ceil(retry), LOGIN_LIMITED)


def _window(limit: RateLimit, now: float) -> int:
    """The fixed window `now` falls in (0 for a limit that is off: its key is unused)."""
    return int(now) // limit.period_seconds if limit.enabled else 0
