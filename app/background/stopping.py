"""Waiting that a process stop cuts short.

Background loops end on a shared `stopping` event rather than on cancellation alone:
on Python 3.11 a cancel that lands just as redis-py's internal `wait_for` completes is
swallowed, and a loop relying on it would run on and hang the shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib


async def pause(stopping: asyncio.Event, seconds: float) -> None:
    """Wait `seconds`, or less when `stopping` is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), seconds)
