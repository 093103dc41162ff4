"""Open-loop sending: start calls on a schedule, whatever the answers take.

A closed loop (send when the last answer came) lets a slow server slow its own load
down and hides its queue; an open loop keeps the offered rate and shows it. Every
benchmark that offers a rate paces its calls with `open_loop`.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field


@dataclass
class Paced:
    """What an open loop did: how many it sent, when, and how late each send left."""

    sent: int = 0
    started: float = 0.0  # time.monotonic()
    last_sent: float = 0.0
    behind: list[float] = field(default_factory=list)  # s after its moment, per send


async def open_loop(
    fire: Callable[[int], Awaitable[None]],
    rate: float,
    *,
    count: int | None = None,
    seconds: float | None = None,
    concurrency: int | None = None,
    stop: Callable[[], bool] | None = None,
) -> Paced:
    """Start `fire(i)` at `i / rate` s from now, until `count` are sent, `seconds` have
    passed or `stop()` says so; then wait for all of them.

    With `concurrency`, at most that many are in flight: a send waits for a slot, and
    how late that made it is in `Paced.behind`.
    """
    slots = asyncio.Semaphore(concurrency) if concurrency else None
    tasks: set[asyncio.Task[None]] = set()
    paced = Paced(started=time.monotonic())

    async def one(i: int) -> None:
        try:
            await fire(i)
        finally:
            if slots is not None:
                slots.release()

    for i in itertools.count():
        due = paced.started + i / rate
        if (count is not None and i >= count) or (seconds is not None and i / rate >= seconds):
            break
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        if stop is not None and stop():
            break
        if slots is not None:
            await slots.acquire()
        paced.last_sent = now = time.monotonic()
        paced.behind.append(max(now - due, 0.0))
        task = asyncio.create_task(one(i))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        paced.sent += 1
    if tasks:
        await asyncio.gather(*tasks)
    return paced
