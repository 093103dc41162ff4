"""PasswordHasher's pool: at most PASSWORD_HASH_THREADS hashes at once, on low-priority
threads of its own, and a bounded queue behind them.

Concurrency is measured inside bcrypt itself: `bcrypt.checkpw` is wrapped to count the
calls running at that moment (the real function still does the work), so the figure
is what the CPU sees, whatever the pool's internals.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading

import bcrypt
import pytest

from app.errors import RateLimited
from app.services.passwords import (
    HASH_THREAD_NICE,
    MAX_QUEUE_SECONDS,
    MIN_WAITING_HASHES,
    PasswordHasher,
)


class Inside:
    """How many bcrypt checks run at once, on which threads, in which scheduling class."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.most = 0
        self.threads: set[int] = set()
        self.nice: set[int] = set()
        self.policies: set[int] = set()


@pytest.fixture
def inside(monkeypatch: pytest.MonkeyPatch) -> Inside:
    seen = Inside()
    original = bcrypt.checkpw

    def measured(password: bytes, hashed: bytes) -> bool:
        thread = threading.get_native_id()
        with seen.lock:
            seen.now += 1
            seen.most = max(seen.most, seen.now)
            seen.threads.add(thread)
            if sys.platform == "linux":
                seen.nice.add(os.getpriority(os.PRIO_PROCESS, thread))
                seen.policies.add(os.sched_getscheduler(thread))
        try:
            return original(password, hashed)
        finally:
            with seen.lock:
                seen.now -= 1

    monkeypatch.setattr(bcrypt, "checkpw", measured)
    return seen


@pytest.mark.parametrize("threads", [1, 2])
async def test_at_most_threads_hashes_run_at_once(inside: Inside, threads: int) -> None:
    hasher = PasswordHasher(rounds=8, threads=threads)
    try:
        digest = await hasher.hash("correct-horse")
        results = await asyncio.gather(
            *(hasher.verify("correct-horse" if n % 2 else "wrong", digest) for n in range(12))
        )
    finally:
        hasher.close()
    assert results == [n % 2 == 1 for n in range(12)]
    assert 1 <= inside.most <= threads
    assert 1 <= len(inside.threads) <= threads
    assert threading.get_native_id() not in inside.threads  # never on the event loop


@pytest.mark.skipif(sys.platform != "linux", reason="scheduling is per thread on Linux only")
async def test_hashes_run_only_on_cores_nothing_else_wants(inside: Inside) -> None:
    hasher = PasswordHasher(rounds=4, threads=1)
    try:
        await hasher.verify("any-password", None)
    finally:
        hasher.close()
    assert inside.policies == {os.SCHED_IDLE}
    assert os.sched_getscheduler(0) != os.SCHED_IDLE  # the event loop's thread is untouched


@pytest.mark.skipif(sys.platform != "linux", reason="nice is per thread on Linux only")
async def test_where_sched_idle_is_refused_hashes_run_below_the_loops_priority(
    inside: Inside, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(*_: object) -> None:
        raise PermissionError("SCHED_IDLE not allowed here")

    monkeypatch.setattr(os, "sched_setscheduler", refused)
    hasher = PasswordHasher(rounds=4, threads=1)
    try:
        await hasher.verify("any-password", None)
    finally:
        hasher.close()
    loop_nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert inside.policies == {os.SCHED_OTHER}
    assert inside.nice == {min(19, loop_nice + HASH_THREAD_NICE)}


async def test_beyond_the_queue_a_hash_is_refused_with_retry_after() -> None:
    """One running and two waiting fill a pool of one thread and two places; the fourth,
    asked for in the same turn of the loop, is refused before it costs anything."""
    hasher = PasswordHasher(rounds=4, threads=1, max_waiting=2)
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
    cheap = PasswordHasher(rounds=4, threads=1)
    try:
        assert cheap.max_waiting >= 200  # the suite signs up 100 users at once
    finally:
        cheap.close()
    costly = PasswordHasher(rounds=12, threads=2)
    try:
        per_hash = costly._seconds_per_hash
        expected = MAX_QUEUE_SECONDS * 2 / per_hash
        assert costly.max_waiting == max(MIN_WAITING_HASHES, int(expected))
        assert costly.max_waiting * per_hash / 2 <= MAX_QUEUE_SECONDS
    finally:
        costly.close()
