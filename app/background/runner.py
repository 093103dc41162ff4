"""Starts and stops the background loops of one process.

Every process listens for expiry events (the fast path; duplicates are harmless).
The sweeper, the reconciler and the broadcaster each run under a leader lease,
so one process per deployment does each, and another takes over within a lease
time when it dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import socketio
from redis.exceptions import RedisError

from app import metrics
from app.background.access_leader import AccessLeader, Notify
from app.background.broadcaster import Broadcaster
from app.background.expiry_cluster import expiry_listener
from app.background.reconciler import Reconciler
from app.background.stopping import pause
from app.background.sweeper import Sweeper
from app.background.tally_flush import flush_forever
from app.container import Container
from app.events import ACCESS_EVENT, user_room
from app.runtime.stalls import watch_loop_lag
from app.store.leases import Lease, reconciler_lease, sweeper_lease
from app.store.tally import TallyStore

log = logging.getLogger(__name__)

STOP_SECONDS = 5.0
SWEEP_LEASE_SECONDS = 10.0  # a dead or cut-off sweeper is replaced within this (plus a pass)


async def _every(
    name: str,
    interval: float,
    lease: Lease,
    work: Callable[[], Awaitable[object]],
    stopping: asyncio.Event,
) -> None:
    """Run `work` every `interval` seconds while this process holds `lease`, until `stopping`."""
    while not stopping.is_set():
        try:
            if await lease.refresh():
                with metrics.BACKGROUND_PASS.labels(task=name).time():
                    await work()
        except asyncio.CancelledError:
            raise
        except Exception:
            metrics.BACKGROUND_ERRORS.labels(task=name).inc()
            log.warning("%s pass failed", name, exc_info=True)
        await pause(stopping, interval)


def _notifier(sio: socketio.AsyncServer | None) -> Notify | None:
    """`access_update` to one user's sockets, on whichever process or host they are."""
    if sio is None:
        return None

    async def notify(user_id: str, payload: dict[str, Any]) -> None:
        await sio.emit(ACCESS_EVENT, payload, room=user_room(user_id))

    return notify


class BackgroundTasks:
    def __init__(self, container: Container) -> None:
        self.container = container
        self.tasks: list[asyncio.Task[None]] = []
        self.stopping = asyncio.Event()
        settings = container.settings
        self.sweeper = Sweeper(
            container.hold_store,
            container.db,
            horizon_ms=1000
            * min(settings.reservation_ttl_seconds, settings.purchase_claim_timeout_seconds),
        )
        self.reconciler = Reconciler(container.db, container.drop_store, container.hold_store)
        self.listener = expiry_listener(
            container.hold_store,
            container.redis,
            self.stopping,
            hold_lifetime_ms=settings.reservation_ttl_seconds * 1000,
        )
        self.sweep_lease = sweeper_lease(container.redis, SWEEP_LEASE_SECONDS)
        self.reconcile_lease = reconciler_lease(
            container.redis, max(settings.reconcile_interval_seconds * 2, 10)
        )
        self.broadcaster = (
            Broadcaster(
                container.redis,
                container.scripts,
                container.sio,
                settings.stock_broadcast_interval_ms,
                self.stopping,
            )
            if container.sio is not None
            else None
        )

        self.access_leader = AccessLeader(
            container.db,
            container.drop_store,
            container.access_store,
            _notifier(container.sio),
            self.stopping,
        )

    async def _sweep(self) -> None:
        await self.sweeper.sweep_pass(await self.container.drop_store.index())

    def start(self) -> None:
        settings = self.container.settings
        self.tasks = [
            asyncio.create_task(self.listener.run(), name="expiry-listener"),
            asyncio.create_task(
                _every(
                    "sweeper",
                    settings.sweep_interval_ms / 1000,
                    self.sweep_lease,
                    self._sweep,
                    self.stopping,
                ),
                name="sweeper",
            ),
            asyncio.create_task(
                _every(
                    "reconciler",
                    settings.reconcile_interval_seconds,
                    self.reconcile_lease,
                    self.reconciler.run_once,
                    self.stopping,
                ),
                name="reconciler",
            ),
        ]
        if self.broadcaster is not None:
            self.tasks.append(asyncio.create_task(self.broadcaster.run(), name="broadcaster"))
        self.tasks.append(asyncio.create_task(self.access_leader.run(), name="access-leader"))
        # Every process flushes its own reserve outcomes (the console's chart sums them).
        self.tasks.append(
            asyncio.create_task(
                flush_forever(TallyStore(self.container.redis), self.stopping),
                name="reserve-tally",
            )
        )
        self.tasks.append(asyncio.create_task(watch_loop_lag(), name="loop-lag"))

    async def stop(self) -> None:
        """Stop every loop: cancel once, then wait. A loop whose cancel was swallowed ends
        at its next `stopping` check; cancelling again could cut its own clean-up short."""
        self.stopping.set()
        pending = {task for task in self.tasks if not task.done()}
        for task in pending:
            task.cancel()
        if pending:
            _, pending = await asyncio.wait(pending, timeout=STOP_SECONDS)
        if pending:
            log.error("background tasks did not stop: %s", [t.get_name() for t in pending])
        for task in self.tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.warning(
                    "background task %s ended with an error",
                    task.get_name(),
                    exc_info=task.exception(),
                )
        for lease in (self.sweep_lease, self.reconcile_lease):
            with contextlib.suppress(RedisError, OSError):
                await lease.release()
