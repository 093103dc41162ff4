"""The stock broadcaster: at most one `stock_update` per drop per interval.

Every script that changes a drop's available stock sets the drop's `dirty` flag
and, only when the flag was clear, publishes the drop id: one message per burst,
not one per reserve. One broadcaster per deployment (a leader lease) listens,
and for each dirty drop reads the value at send time with stock_take.lua
(which clears the flag). A change after that read sets the flag again and
publishes again, so the last event of a burst carries the final value. Pushes
of a drop are spaced by STOCK_BROADCAST_INTERVAL_MS, from the end of one send
to the start of the next.
"""

from __future__ import annotations

import asyncio
import logging
import time

import socketio
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app import metrics
from app.background.stopping import pause
from app.events import STOCK_EVENT, stock_update
from app.store import keys
from app.store.leases import broadcaster_lease
from app.store.scripts import Scripts
from app.store.stock import StockFeed

log = logging.getLogger(__name__)

LEASE_TTL_SECONDS = 5.0


class Broadcaster:
    def __init__(
        self,
        redis: Redis,
        scripts: Scripts,
        sio: socketio.AsyncServer,
        interval_ms: int,
        stopping: asyncio.Event | None = None,
    ) -> None:
        self.stopping = stopping or asyncio.Event()
        self.sio = sio
        self.interval = interval_ms / 1000
        self.feed = StockFeed(redis, scripts)
        self.lease = broadcaster_lease(redis, LEASE_TTL_SECONDS)
        self._last_sent: dict[str, float] = {}
        self._pending: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()
        self._stopped = False
        self.leading = asyncio.Event()

    async def run(self) -> None:
        self._stopped = False
        try:
            while not self.stopping.is_set():
                try:
                    if await self.lease.refresh():
                        await self._lead()
                    else:
                        await pause(
                            self.stopping, LEASE_TTL_SECONDS / 3
                        )  # then try for the lease again
                except (RedisError, OSError) as exc:
                    self.leading.clear()
                    metrics.BACKGROUND_ERRORS.labels(task="broadcaster").inc()
                    metrics.REDIS_RECONNECTS.labels(task="broadcaster").inc()
                    log.warning("broadcaster lost Redis: %s; retrying", type(exc).__name__)
                    await pause(self.stopping, 0.5)  # reconnect backoff
        finally:
            await self._stop_pushes()
            await self.lease.release()

    async def _stop_pushes(self) -> None:
        """Cancel the pushes under way and wait for them to end.

        A cancelled push reschedules its drop when it was asked to go again; left
        running, that push would read and publish after shutdown, reopening connections
        on pools already closed that nothing closes again.
        """
        self._stopped = True
        self._again.clear()
        pushes = list(self._pending.values())
        self._pending.clear()  # a push cancelled before it started never pops itself
        for push in pushes:
            push.cancel()
        await asyncio.gather(*pushes, return_exceptions=True)

    async def _lead(self) -> None:
        renew_every = LEASE_TTL_SECONDS / 3
        listen_for = 0.5  # how long one wait for a message lasts (bounds the reaction to a stop)
        async with self.feed.changes() as pubsub:
            self.leading.set()
            # Changes made while no one led left their flags set without a listener.
            for drop_id in await self.feed.dirty_drops():
                self.schedule(drop_id)
            renewed = time.monotonic()
            while not self.stopping.is_set():
                message = await pubsub.get_message(timeout=listen_for)
                if message and message.get("type") == "message":
                    self.schedule(str(message["data"]))
                if time.monotonic() - renewed >= renew_every:
                    if not await self.lease.refresh():
                        self.leading.clear()
                        return
                    renewed = time.monotonic()

    def schedule(self, drop_id: str) -> None:
        if self._stopped or not keys.DROP_ID_RE.match(drop_id):
            return
        if drop_id in self._pending:
            # A push is under way; it may already have read the value. Go again after it.
            self._again.add(drop_id)
            return
        wait = self._last_sent.get(drop_id, 0.0) + self.interval - time.monotonic()
        self._pending[drop_id] = asyncio.create_task(self._push_after(drop_id, max(wait, 0.0)))

    async def _push_after(self, drop_id: str, delay: float) -> None:
        try:
            if delay > 0:
                await asyncio.sleep(delay)  # the rate limit itself
            self._again.discard(drop_id)  # what changed until now, the read below includes
            available, sizes = await self.feed.take(drop_id)
            if available >= 0:
                await self.sio.emit(STOCK_EVENT, stock_update(drop_id, available, sizes))
                metrics.STOCK_PUSHES.inc()
            # Spaced from the end of this send: each client's copy was queued before it, so
            # however long a read or a send takes, no client gets two within the interval.
            self._last_sent[drop_id] = time.monotonic()
        except (RedisError, OSError) as exc:
            metrics.BACKGROUND_ERRORS.labels(task="broadcaster").inc()
            log.warning(
                "stock push failed: %s: %s", type(exc).__name__, exc, extra={"drop": drop_id}
            )
        finally:
            self._pending.pop(drop_id, None)
            if drop_id in self._again:
                self._again.discard(drop_id)
                self.schedule(drop_id)
