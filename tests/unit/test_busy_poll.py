"""Busy polling: after a request the loop polls without sleeping, then sleeps again."""

from __future__ import annotations

import asyncio
import itertools
import selectors
from collections.abc import Awaitable, Callable
from typing import Any, cast

from fastapi import FastAPI

from app.api.hot_paths import HotPaths
from app.config import load_settings
from app.runtime.busy_poll import BusyPoller


class RecordingSelector(selectors.DefaultSelector):
    """The selector the loop blocks in: each wait's timeout (0 = a poll, not a sleep)."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[tuple[float, float | None]] = []
        self.clock: Callable[[], float] = lambda: 0.0

    def select(self, timeout: float | None = None) -> list[Any]:
        self.waits.append((self.clock(), timeout))
        return super().select(timeout)


def run_recorded(scenario: Callable[[], Awaitable[None]]) -> list[tuple[float, float | None]]:
    selector = RecordingSelector()
    loop = asyncio.SelectorEventLoop(selector)
    selector.clock = loop.time
    try:
        loop.run_until_complete(scenario())
    finally:
        loop.close()
    return selector.waits


def poll_runs(waits: list[tuple[float, float | None]]) -> list[list[float]]:
    """Runs of zero-timeout waits in a row. A task waking from a timer makes one (its
    step is scheduled for the next turn); only a loop kept busy makes long runs."""
    runs: list[list[float]] = [[]]
    for at, timeout in waits:
        if timeout == 0:
            runs[-1].append(at)
        elif runs[-1]:
            runs.append([])
    return [run for run in runs if run]


def longest(runs: list[list[float]]) -> list[float]:
    return max(runs, key=len, default=[])


def sleeps(waits: list[tuple[float, float | None]]) -> list[float]:
    return [at for at, timeout in waits if timeout is None or timeout > 0]


def test_after_a_request_the_loop_polls_for_the_window_then_sleeps() -> None:
    # The poller's clock advances 1 ms per reading, whatever the machine's load: the
    # window of 20 ms is then exactly 20 readings (the kick's and one per poll).
    ticks = itertools.count()
    poller = BusyPoller(0.02, clock=lambda: next(ticks) / 1000)
    kicked: list[float] = []

    async def scenario() -> None:
        kicked.append(asyncio.get_running_loop().time())
        poller.kick()
        assert poller.spinning
        await asyncio.sleep(0.2)  # the quiet time being observed, not a hand-off

    waits = run_recorded(scenario)
    assert not poller.spinning
    polling = longest(poll_runs(waits))
    # it polled from the request on, once per reading of its clock within the window ...
    assert 15 <= len(polling) <= 21, len(polling)
    assert polling[0] <= kicked[0] <= polling[-1]
    # ... and then the loop slept
    assert any(at > polling[-1] for at in sleeps(waits))


def test_requests_closer_than_the_window_keep_it_polling_throughout() -> None:
    poller = BusyPoller(0.05)
    kicks: list[float] = []

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        for _ in range(10):
            kicks.append(loop.time())
            poller.kick()
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.3)  # quiet after the last request, observed

    waits = run_recorded(scenario)
    between = [at for at in sleeps(waits) if kicks[0] <= at <= kicks[-1]]
    assert between == []  # 5 ms apart: never slept, though each request's timer asked to
    assert not poller.spinning  # and wound down on its own after the last one


def test_a_zero_window_never_polls() -> None:
    poller = BusyPoller(0)

    async def scenario() -> None:
        for _ in range(5):
            poller.kick()
            await asyncio.sleep(0.005)

    waits = run_recorded(scenario)
    assert not poller.spinning
    assert len(longest(poll_runs(waits))) <= 2  # only the task's own wake-ups
    assert len(sleeps(waits)) >= 5


async def test_every_http_request_through_the_app_keeps_its_worker_polling() -> None:
    reached: list[str] = []

    async def api(scope: dict[str, Any], receive: Any, send: Any) -> None:
        reached.append(scope["path"])  # the FastAPI app's place: a route not on the hot path

    hot = HotPaths(cast(FastAPI, api), load_settings(_env_file=None, busy_poll_ms=50))
    assert not hot.poller.spinning
    scope = {"type": "http", "method": "GET", "path": "/healthz", "headers": []}
    await hot(scope, _never_called, _never_called)
    assert reached == ["/healthz"]
    assert hot.poller.spinning


async def test_a_purchase_leaves_its_worker_sleeping_while_postgresql_answers() -> None:
    """A purchase spends its time waiting on PostgreSQL, which needs the cores the
    spinning loop would take: it does not start the poll (keyed, so the stand-in app
    below serves it; the lean path sees the same path)."""
    reached: list[str] = []

    async def api(scope: dict[str, Any], receive: Any, send: Any) -> None:
        reached.append(scope["path"])

    hot = HotPaths(cast(FastAPI, api), load_settings(_env_file=None, busy_poll_ms=50))
    for path in ("/api/reservations/d1.u1.abc/purchase", "/api/drops/d1.u1.abc/purchase"):
        scope = {
            "type": "http",
            "method": "POST",
            "path": path,
            "query_string": b"",
            "headers": [(b"idempotency-key", b"key-1")],
        }
        await hot(scope, _never_called, _never_called)
    assert len(reached) == 2
    assert not hot.poller.spinning


async def _never_called(*_: Any) -> Any:
    raise AssertionError("not expected")
