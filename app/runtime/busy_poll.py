"""Adaptive, polite busy polling: keep a worker's event loop awake between close requests.

A worker that has caught up blocks in `epoll_wait`, and the next request has to wake
it. On a virtual machine that parks the vCPU and brings it back, and the request after
a wake-up runs on cold caches: measured here (docs/BENCHMARKS.md), a reserve cost
1.3 to 1.5 times the CPU at a steady 5,000 a second that it cost at full speed, and
the latency tail grew long before the worker was full.

So for `window` seconds after each request the loop is given a callback that
re-schedules itself: the loop keeps polling its sockets with a zero timeout and picks
the next request up at once. Two things keep that cheap:

- it is adaptive: when no request has come for `window`, the callback stops and the
  loop sleeps as before, so an idle worker costs nothing;
- it is polite: each poll first yields the CPU (`sched_yield`), so a spinning worker
  takes only time that no other process on its core wants. Without that, two
  spinning workers on two cores took the CPU Redis and each other needed, and the
  sold-out peak fell by 38 %.

`BUSY_POLL_MS` sets the window; 0 turns it off. It uses public APIs only (the running
loop's `call_soon`, `os.sched_yield`), so it needs no start-up check. docs/RUNTIME.md.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable


def _no_yield() -> None:
    return None


_yield_cpu: Callable[[], None] = getattr(os, "sched_yield", _no_yield)


class BusyPoller:
    """`kick()` on every request; the loop polls instead of sleeping until `window` s pass."""

    def __init__(self, window_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._window = window_seconds
        self._clock = clock
        self._last_request = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self.spinning = False

    def kick(self) -> None:
        """A request arrived: keep polling for another window."""
        if self._window <= 0:
            return
        self._last_request = self._clock()
        if not self.spinning:
            self.spinning = True
            self._loop = asyncio.get_running_loop()
            self._loop.call_soon(self._poll)

    def _poll(self) -> None:
        loop = self._loop
        if loop is not None and self._clock() - self._last_request < self._window:
            _yield_cpu()
            loop.call_soon(self._poll)
        else:
            self.spinning = False
