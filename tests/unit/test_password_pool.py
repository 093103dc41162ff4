"""PasswordHasher's pool: at most PASSWORD_HASH_PROCESSES hashes at once, in low-priority
processes of its own, and a bounded queue behind them.

The hash processes are read from the kernel: this process's children that appeared with
the hasher, and their scheduling class.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor

import psutil
import pytest

from app.errors import RateLimited
from app.services.passwords import (
    HASH_PROCESS_NICE,
    MAX_QUEUE_SECONDS,
    MIN_WAITING_HASHES,
    PasswordHasher,
    lower_process_priority,
)


def children() -> set[int]:
    """This process's descendants: the hash processes are its fork server's children."""
    return {child.pid for child in psutil.Process().children(recursive=True)}


def idle(pids: set[int]) -> set[int]:
    """Those of `pids` in the SCHED_IDLE class (still running)."""
    found = set()
    for pid in pids:
        try:
            if os.sched_getscheduler(pid) == os.SCHED_IDLE:
                found.add(pid)
        except OSError:  # it ended meanwhile
            continue
    return found


@pytest.mark.parametrize("processes", [1, 2])
async def test_at_most_processes_hashes_run_at_once(processes: int) -> None:
    before = children()
    hasher = PasswordHasher(rounds=8, processes=processes)
    try:
        digest = await hasher.hash("correct-horse")
        results = await asyncio.gather(
            *(hasher.verify("correct-horse" if n % 2 else "wrong", digest) for n in range(12))
        )
        hashing = children() - before
    finally:
        hasher.close()
    assert results == [n % 2 == 1 for n in range(12)]
    # Each process hashes one at a time; twelve at once started all of them, no more.
    assert len(idle(hashing)) == processes, hashing


@pytest.mark.skipif(sys.platform != "linux", reason="SCHED_IDLE is Linux's")
async def test_hashes_run_only_on_cores_nothing_else_wants() -> None:
    before = children()
    hasher = PasswordHasher(rounds=4, processes=1)
    try:
        await hasher.verify("any-password", None)
        hashing = children() - before
        assert len(idle(hashing)) == 1, hashing
    finally:
        hasher.close()
    assert os.sched_getscheduler(0) != os.SCHED_IDLE  # the event loop's process is untouched


def _refused_then_lowered() -> tuple[int, int, int]:
    """In a fresh process: SCHED_IDLE refused, then the initializer; (policy, nice before,
    nice after)."""

    def refused(*_: object) -> None:
        raise PermissionError("SCHED_IDLE not allowed here")

    before = os.getpriority(os.PRIO_PROCESS, 0)
    os.sched_setscheduler = refused  # type: ignore[assignment]
    lower_process_priority()
    return os.sched_getscheduler(0), before, os.getpriority(os.PRIO_PROCESS, 0)


@pytest.mark.skipif(sys.platform != "linux", reason="SCHED_IDLE is Linux's")
def test_where_sched_idle_is_refused_hashes_run_below_the_workers_priority() -> None:
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        policy, before, after = pool.submit(_refused_then_lowered).result(timeout=30)
    assert policy == os.SCHED_OTHER
    assert after == min(19, before + HASH_PROCESS_NICE)


async def test_a_hash_process_that_dies_is_replaced() -> None:
    before = children()
    hasher = PasswordHasher(rounds=12, processes=1)
    try:
        digest = await hasher.hash("correct-horse")
        (hashing,) = idle(children() - before)
        checking = asyncio.ensure_future(hasher.verify("correct-horse", digest))
        os.kill(hashing, signal.SIGKILL)  # mid-hash, or just before it
        assert await checking is True  # hashed again, in a new process
        assert await hasher.verify("wrong", digest) is False
        assert idle(children() - before) - {hashing}
    finally:
        hasher.close()


# A worker: one hash, its pid on stdout, then it waits to be killed.
WORKER = """
import asyncio, os
from app.services.passwords import PasswordHasher

async def main() -> None:
    hasher = PasswordHasher(rounds=4)
    await hasher.verify("any-password", None)
    print(os.getpid(), flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def test_a_worker_killed_outright_takes_its_hash_processes_with_it() -> None:
    """SIGKILL leaves the pool no chance to shut down: the hash process sees its worker
    end and exits, and with it the fork server and the resource tracker."""
    with subprocess.Popen([sys.executable, "-c", WORKER], stdout=subprocess.PIPE) as worker:
        try:
            assert worker.stdout is not None
            assert int(worker.stdout.readline()) == worker.pid  # it has hashed
            helpers = psutil.Process(worker.pid).children(recursive=True)
            assert idle({helper.pid for helper in helpers}), helpers
        finally:
            worker.kill()
    _, alive = psutil.wait_procs(helpers, timeout=10)
    assert alive == [], alive


async def test_beyond_the_queue_a_hash_is_refused_with_retry_after() -> None:
    """One running and two waiting fill a pool of one process and two places; the fourth,
    asked for in the same turn of the loop, is refused before it costs anything."""
    hasher = PasswordHasher(rounds=4, processes=1, max_waiting=2)
    try:
        outcomes = await asyncio.gather(
            *(hasher.verify("any-password", None) for _ in range(4)), return_exceptions=True
        )
        refused = [o for o in outcomes if isinstance(o, RateLimited)]
        assert len(refused) == 1
        assert outcomes[:3] == [False, False, False]
        assert refused[0].retry_after_seconds >= 1
        # The queue drained: the next one runs.
        assert await hasher.verify("any-password", None) is False
    finally:
        hasher.close()


def test_the_default_queue_holds_about_twenty_seconds_of_hashing() -> None:
    """Bounded by work, not by count: a cheap cost lets a burst of signups queue, the
    production cost keeps the wait near MAX_QUEUE_SECONDS."""
    cheap = PasswordHasher(rounds=4, processes=1)
    try:
        assert cheap.max_waiting >= 200  # the suite signs up 100 users at once
    finally:
        cheap.close()
    costly = PasswordHasher(rounds=12, processes=2)
    try:
        per_hash = costly._seconds_per_hash
        expected = MAX_QUEUE_SECONDS * 2 / per_hash
        assert costly.max_waiting == max(MIN_WAITING_HASHES, int(expected))
        assert costly.max_waiting * per_hash / 2 <= MAX_QUEUE_SECONDS
    finally:
        costly.close()
