"""Reserve outcomes per drop, counted in this process for the operator console's chart.

Counting is a dict increment on the reserve path (no Redis round trip); a background
task adds the counts to Redis once a second, where every process's share meets.
"""

from __future__ import annotations

from collections import Counter

_pending: Counter[tuple[str, str]] = Counter()


def count(drop_id: str, code: str) -> None:
    """One reserve of `drop_id` answered with `code` ("OK", "SOLD_OUT", ...)."""
    _pending[(drop_id, code)] += 1


def take() -> dict[tuple[str, str], int]:
    """The counts since the last take, and a fresh start."""
    taken = dict(_pending)
    _pending.clear()
    return taken
