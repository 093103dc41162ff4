"""bcrypt hashing on a few low-priority threads of its own, with a bounded queue.

bcrypt is deliberately slow (about a third of a second at cost 12 here). On the event
loop it would stall every request; on the loop's default thread pool (up to 6 threads on
2 cores) a login flood ran six hashes at once per worker and took the CPU from reserves
and drop reads. So hashes run on `threads` threads per worker (PASSWORD_HASH_THREADS),
each in Linux's SCHED_IDLE class (per thread: it runs only on a core no other thread
wants, so a flood of logins never takes a timeslice from a reserve; nice +10 where
SCHED_IDLE is refused), and at most
`max_waiting` more wait their turn (by default as many as the threads hash in
MAX_QUEUE_SECONDS at the measured cost); beyond that the caller gets 429 RATE_LIMITED with a
Retry-After of about the time the queue takes to drain (the contract's answer for "too
many logins now"; 503 is reserved for a store that is down).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import bcrypt

from app.errors import RateLimited

log = logging.getLogger(__name__)

MIN_PASSWORD_BYTES = 8
MAX_PASSWORD_BYTES = 72  # bcrypt's own limit; longer passwords are refused, never truncated
HASH_THREAD_NICE = 10  # added to the thread's nice value: the event loop runs first
# How much hashing one worker lets wait for a thread: about as long as a shopper waits
# for a login before giving up (~64 hashes at cost 12 on one thread).
MAX_QUEUE_SECONDS = 20.0
MIN_WAITING_HASHES = 8

T = TypeVar("T")


def lower_thread_priority() -> None:
    """Thread initializer: this thread runs only on a core nothing else wants.

    SCHED_IDLE (Linux, per thread): the scheduler gives the thread a core only when no
    normal thread is runnable on it, and takes it back the moment one wakes, so a login
    flood never costs a reserve a timeslice; at 70 % load the idle 30 % still hashes.
    Where SCHED_IDLE is refused, nice +HASH_THREAD_NICE is the fallback. Only on Linux,
    where a thread id is a valid target (elsewhere it could name another process).
    """
    if sys.platform != "linux":
        return
    thread_id = threading.get_native_id()
    try:
        os.sched_setscheduler(thread_id, os.SCHED_IDLE, os.sched_param(0))
        return
    except (OSError, AttributeError) as exc:
        log.info("SCHED_IDLE refused for the password-hash thread (%s); lowering its nice", exc)
    try:
        nice = os.getpriority(os.PRIO_PROCESS, thread_id)
        os.setpriority(os.PRIO_PROCESS, thread_id, min(19, nice + HASH_THREAD_NICE))
    except OSError as exc:  # a sandbox that forbids it: hashing still works
        log.warning("could not lower the password-hash thread's priority: %s", exc)


class PasswordHasher:
    """bcrypt on `threads` threads; `threads + max_waiting` hashes in flight at most."""

    def __init__(self, rounds: int, threads: int = 1, max_waiting: int | None = None) -> None:
        self.rounds = rounds
        self.threads = threads
        self._executor = ThreadPoolExecutor(
            max_workers=threads,
            thread_name_prefix="password-hash",
            initializer=lower_thread_priority,
        )
        self._in_flight = 0  # running or waiting; one event loop per worker, so no lock
        started = time.perf_counter()
        # Hashed once so a login for an unknown email costs the same as a wrong password.
        self._dummy_hash = bcrypt.hashpw(b"sneakerdrop-dummy-password", bcrypt.gensalt(rounds))
        self._seconds_per_hash = time.perf_counter() - started
        # Counted in work, not requests: at a cheap cost (tests) a burst of signups queues.
        self.max_waiting = (
            max_waiting
            if max_waiting is not None
            else max(MIN_WAITING_HASHES, int(MAX_QUEUE_SECONDS * threads / self._seconds_per_hash))
        )

    async def hash(self, password: str) -> str:
        digest = await self._run(bcrypt.hashpw, password.encode(), bcrypt.gensalt(self.rounds))
        return digest.decode()

    async def verify(self, password: str, password_hash: str | None) -> bool:
        """Constant work whether or not the account exists."""
        candidate = password.encode()
        usable = password_hash is not None and len(candidate) <= MAX_PASSWORD_BYTES
        # An unusable attempt (unknown account, over-long password) still pays for one check.
        target = password_hash.encode() if usable and password_hash else self._dummy_hash
        matched = await self._run(bcrypt.checkpw, candidate if usable else b"unusable", target)
        return matched and usable

    async def _run(self, work: Callable[[bytes, bytes], T], first: bytes, second: bytes) -> T:
        if self._in_flight >= self.threads + self.max_waiting:
            raise RateLimited(self._drain_seconds())
        self._in_flight += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, work, first, second)
        finally:
            self._in_flight -= 1

    def _drain_seconds(self) -> int:
        return math.ceil(self._in_flight * self._seconds_per_hash / self.threads)

    def close(self) -> None:
        """Drop the waiting hashes; a running one finishes on its thread."""
        self._executor.shutdown(wait=False, cancel_futures=True)
