"""The worker's stall metrics: a collection is timed, a blocked event loop is seen."""

from __future__ import annotations

import asyncio
import gc
import time

from prometheus_client import REGISTRY

from app.runtime.stalls import GcPauseRecorder, watch_loop_lag


def _observed(metric: str, **labels: str) -> float:
    value = REGISTRY.get_sample_value(f"{metric}_count", labels)
    return value or 0.0


def test_each_collection_is_timed_under_its_generation() -> None:
    recorder = GcPauseRecorder()
    before = _observed("sneakerdrop_gc_pause_seconds", generation="2")
    recorder.install()
    try:
        gc.collect()
    finally:
        recorder.uninstall()
    assert _observed("sneakerdrop_gc_pause_seconds", generation="2") == before + 1
    gc.collect()  # uninstalled: no longer counted
    assert _observed("sneakerdrop_gc_pause_seconds", generation="2") == before + 1


async def test_a_blocked_event_loop_is_recorded_as_lag() -> None:
    lags: list[float] = []
    woke = asyncio.Event()

    def observed(lag: float) -> None:
        lags.append(lag)
        woke.set()

    watcher = asyncio.create_task(watch_loop_lag(0.01, observed))
    try:
        await asyncio.wait_for(woke.wait(), 5)  # the watcher is running
        woke.clear()
        lags.clear()
        time.sleep(0.2)  # noqa: ASYNC251 (the stall being measured: the loop is blocked)
        await asyncio.wait_for(woke.wait(), 5)
    finally:
        watcher.cancel()
    assert lags[0] >= 0.15
