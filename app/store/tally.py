"""Reserve outcomes per drop and second in Redis, where every process's counts meet.

One hash per drop and second, `{d:<dropId>}:tally:<unix second>`, field = outcome code,
value = reserves answered with it in that second by all processes together. Each hash
lives `RETAIN_SECONDS`: the operator console charts the last minute, nothing older.
The key carries the drop's hash tag, so in a cluster it sits in the drop's own slot.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.store.keys import DropKeys

RETAIN_SECONDS = 300


def tally_key(drop_id: str, second: int) -> str:
    """The hash of one drop's reserve outcomes in one wall-clock second."""
    return f"{DropKeys(drop_id).tag}:tally:{second}"


class TallyStore:
    """Adds a process's counts to Redis and reads a drop's recent seconds back."""

    def __init__(self, redis: Any) -> None:
        self.redis = redis

    async def add(self, second: int, counts: Mapping[tuple[str, str], int]) -> None:
        """Add `counts` ((dropId, code) -> n) to `second`'s hashes, in one round trip."""
        if not counts:
            return
        pipe = self.redis.pipeline(transaction=False)
        touched: set[str] = set()
        for (drop_id, code), n in counts.items():
            key = tally_key(drop_id, second)
            pipe.hincrby(key, code, n)
            touched.add(key)
        for key in touched:
            pipe.expire(key, RETAIN_SECONDS)
        await pipe.execute()

    async def recent(self, drop_id: str, last: int, seconds: int) -> list[dict[str, int]]:
        """Outcome counts of `drop_id` for each of the `seconds` seconds ending at `last`,
        oldest first; a second nobody reserved in is an empty dict."""
        pipe = self.redis.pipeline(transaction=False)
        first = last - seconds + 1
        for second in range(first, last + 1):
            pipe.hgetall(tally_key(drop_id, second))
        replies = await pipe.execute()
        return [{_text(k): int(v) for k, v in reply.items()} for reply in replies]


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
