"""A worker's own stalls, measured: garbage-collector pauses and event-loop lag.

Every request in a worker waits out both, whatever it does, so they are the first
thing to look at when the latency tail grows on drop day (`/metrics`:
`sneakerdrop_gc_pause_seconds`, `sneakerdrop_event_loop_lag_seconds`). Both cost next
to nothing: a callback per collection, and a timer every `LAG_INTERVAL_S`.

Public APIs only (`gc.callbacks`, the loop's clock): no start-up check, and no switch,
since it measures and changes nothing. docs/RUNTIME.md.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from typing import Any

from app import metrics

LAG_INTERVAL_S = 0.25


class GcPauseRecorder:
    """Times each collection through `gc.callbacks`."""

    def __init__(self) -> None:
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started:
            pause = time.perf_counter() - self._started
            metrics.GC_PAUSES.labels(str(info["generation"])).observe(pause)

    def install(self) -> None:
        if self not in gc.callbacks:
            gc.callbacks.append(self)

    def uninstall(self) -> None:
        if self in gc.callbacks:
            gc.callbacks.remove(self)


async def watch_loop_lag(
    interval: float = LAG_INTERVAL_S, observed: Callable[[float], None] | None = None
) -> None:
    """Sleep `interval` again and again; record how much later than asked each wake-up came."""
    loop = asyncio.get_running_loop()
    while True:
        asked = loop.time() + interval
        await asyncio.sleep(interval)
        lag = max(loop.time() - asked, 0.0)
        metrics.LOOP_LAG.observe(lag)
        if observed is not None:
            observed(lag)
