"""bcrypt hashing in a few low-priority processes of its own, with a bounded queue.

bcrypt is deliberately slow (about a quarter of a second at cost 12 here). On the event
loop it would stall every request; on the loop's default thread pool (up to 6 threads on
2 cores) a login flood ran six hashes at once per worker and took the CPU from reserves
and drop reads. So hashes run in `processes` processes per worker
(PASSWORD_HASH_PROCESSES), each in Linux's SCHED_IDLE class: it runs only on a core
nothing else wants, so a flood of logins never takes a timeslice from a reserve (nice
+10 where SCHED_IDLE is refused). They are processes, not threads, because a thread
shares its worker's GIL: a finished hash takes the GIL back, and a SCHED_IDLE thread
holding it (or being handed it) waits for a free core while the event loop waits for
it. On two busy cores that stalled a worker for up to two seconds (docs/BENCHMARKS.md,
"Login storm beside reserve"). At most `max_waiting` more hashes wait their turn (by
default as many as the processes hash in MAX_QUEUE_SECONDS at the measured cost);
beyond that the caller gets 429 RATE_LIMITED with a Retry-After of about the time the
queue takes to drain (the contract's answer for "too many logins now"; 503 is reserved
for a store that is down).
"""

from __future__ import annotations

import asyncio
import logging
import math
import multiprocessing
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.context import BaseContext
from typing import TypeVar

import bcrypt

from app.errors import RateLimited

log = logging.getLogger(__name__)

MIN_PASSWORD_BYTES = 8
MAX_PASSWORD_BYTES = 72  # bcrypt's own limit; longer passwords are refused, never truncated
HASH_PROCESS_NICE = 10  # added to the process's nice value where SCHED_IDLE is refused
WORKER_POLL_SECONDS = 1.0  # how often a hash process looks for its worker, without pidfd
# How much hashing one worker lets wait for a process: about as long as a shopper waits
# for a login before giving up (~64 hashes at cost 12 in one process).
MAX_QUEUE_SECONDS = 20.0
MIN_WAITING_HASHES = 8

T = TypeVar("T")


def start_hash_process(worker_pid: int) -> None:
    """Initializer of a hash process: it ends with its worker, and runs only on a core
    nothing else wants.

    Ctrl-C is the worker's to handle. A worker killed outright (SIGKILL, out of memory)
    cannot shut its pool down, so the process watches the worker and exits with it (else
    it, its fork server and multiprocessing's resource tracker would outlive it, a set
    for every worker its supervisor restarts).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(
        target=_exit_with, args=(worker_pid,), name="worker-watch", daemon=True
    ).start()
    lower_process_priority()


def _exit_with(worker_pid: int) -> None:
    """Return only to end this process, once `worker_pid` has ended."""
    try:
        watched = os.pidfd_open(worker_pid)  # Linux: readable once the process ends
    except (AttributeError, OSError):
        while _alive(worker_pid):
            time.sleep(WORKER_POLL_SECONDS)
    else:
        select.select([watched], [], [])
    os._exit(0)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lower_process_priority() -> None:
    """This process runs only on a core nothing else wants.

    SCHED_IDLE (Linux): the scheduler gives the process a core only when no normal task
    is runnable on it, and takes it back the moment one wakes, so a login flood never
    costs a reserve a timeslice; at 70 % load the idle 30 % still hashes. Where
    SCHED_IDLE is refused, nice +HASH_PROCESS_NICE.
    """
    if sys.platform != "linux":
        return
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        return
    except (OSError, AttributeError) as exc:
        log.info("SCHED_IDLE refused for the password-hash process (%s); lowering its nice", exc)
    try:
        os.nice(HASH_PROCESS_NICE)
    except OSError as exc:  # a sandbox that forbids it: hashing still works
        log.warning("could not lower the password-hash process's priority: %s", exc)


def _new_pool(processes: int) -> ProcessPoolExecutor:
    """Hash processes forked from a fork server (one per worker, started at the first
    login with this module loaded; spawned where there is none): a fork of the worker
    itself would copy its threads and event loop mid-use, and a spawn per process costs
    an interpreter start. A process starts at the first hash that needs it."""
    context: BaseContext
    if "forkserver" in multiprocessing.get_all_start_methods():
        forkserver = multiprocessing.get_context("forkserver")
        forkserver.set_forkserver_preload([__name__])
        context = forkserver
    else:
        context = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(
        max_workers=processes,
        mp_context=context,
        initializer=start_hash_process,
        initargs=(os.getpid(),),
    )


class PasswordHasher:
    """bcrypt in `processes` processes; `processes + max_waiting` hashes in flight at most."""

    def __init__(self, rounds: int, processes: int = 1, max_waiting: int | None = None) -> None:
        self.rounds = rounds
        self.processes = processes
        self._executor = _new_pool(processes)
        self._in_flight = 0  # running or waiting; one event loop per worker, so no lock
        started = time.perf_counter()
        # Hashed once so a login for an unknown email costs the same as a wrong password.
        self._dummy_hash = bcrypt.hashpw(b"sneakerdrop-dummy-password", bcrypt.gensalt(rounds))
        self._seconds_per_hash = time.perf_counter() - started
        # Counted in work, not requests: at a cheap cost (tests) a burst of signups queues.
        self.max_waiting = (
            max_waiting
            if max_waiting is not None
            else max(
                MIN_WAITING_HASHES, int(MAX_QUEUE_SECONDS * processes / self._seconds_per_hash)
            )
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
        if self._in_flight >= self.processes + self.max_waiting:
            raise RateLimited(self._drain_seconds())
        self._in_flight += 1
        try:
            loop = asyncio.get_running_loop()
            executor = self._executor
            try:
                return await loop.run_in_executor(executor, work, first, second)
            except BrokenProcessPool:
                # A hash process died (killed, out of memory): a new pool (once, however
                # many hashes the old one failed), and this hash once more in it.
                if self._executor is executor:
                    log.warning("a password-hash process died; starting new ones")
                    executor.shutdown(wait=False, cancel_futures=True)
                    self._executor = _new_pool(self.processes)
                return await loop.run_in_executor(self._executor, work, first, second)
        finally:
            self._in_flight -= 1

    def _drain_seconds(self) -> int:
        return math.ceil(self._in_flight * self._seconds_per_hash / self.processes)

    def close(self) -> None:
        """Drop the waiting hashes; a running one finishes in its process, which then ends."""
        self._executor.shutdown(wait=False, cancel_futures=True)
