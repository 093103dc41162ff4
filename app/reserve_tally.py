"""Reserve outcomes per drop, counted in this process for the operator console's chart.

Counting is a dict increment on the reserve path (no Redis round trip); the flush loop
(app/background/tally_flush.py) adds the counts to Redis once a second
(app/store/tally.py), where every process's share meets, and `recent` reads a drop's
last seconds back for the admin stats route.
"""

from __future__ import annotations

import logging
import time
from collections import Counter

from redis.exceptions import RedisError

from app.store.tally import TallyStore

log = logging.getLogger(__name__)

FLUSH_SECONDS = 1.0

_pending: Counter[tuple[str, str]] = Counter()


def count(drop_id: str, code: str) -> None:
    """One reserve of `drop_id` answered with `code` ("OK", "SOLD_OUT", ...)."""
    _pending[(drop_id, code)] += 1


def take() -> dict[tuple[str, str], int]:
    """The counts since the last take, and a fresh start."""
    taken = dict(_pending)
    _pending.clear()
    return taken


async def flush_once(store: TallyStore, second: int | None = None) -> None:
    """Move this process's counts to Redis, under the current wall-clock second.

    Counts that fail to reach Redis are put back, so a Redis blip delays them to the
    next second's bar instead of losing them."""
    taken = take()
    if not taken:
        return
    try:
        await store.add(int(time.time()) if second is None else second, taken)
    except (RedisError, OSError):
        _pending.update(taken)
        raise


async def recent(store: TallyStore, drop_id: str, seconds: int) -> tuple[int, list[dict[str, int]]]:
    """The last `seconds` complete seconds of `drop_id`'s outcomes (all processes), oldest
    first, and the unix second of the newest. The current second is left out: its
    counts are still arriving."""
    last = int(time.time()) - 1
    return last, await store.recent(drop_id, last, seconds)
