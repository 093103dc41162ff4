"""The drop's exclusive advisory lock, taken from a test's own session as a rebuild
(`app.services.rebuild`) takes it: sales then wait inside their statement."""

from __future__ import annotations

import asyncpg

DROP_LOCK = "SELECT pg_advisory_lock(hashtextextended('drop:' || $1::text, 0))"
DROP_UNLOCK = "SELECT pg_advisory_unlock(hashtextextended('drop:' || $1::text, 0))"


async def waiting_on_lock(locker: asyncpg.Connection, count: int) -> bool:
    """Whether at least `count` sessions wait for an advisory lock."""
    waiting = await locker.fetchval(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
    )
    return int(waiting) >= count
