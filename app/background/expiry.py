"""Layer 1 of expiry: keyspace notifications on hold timer keys (the fast path).

Redis publishes `__keyevent@<db>__:expired` when a timer key expires; the
listener releases that hold at once. Notifications are fire-and-forget: lost
while disconnected, node-local on a cluster. So the listener reconnects with
backoff, re-applies `notify-keyspace-events` where the server allows it, and
subscribes to every primary; the sweeper covers whatever it still misses.

A hold Redis reloaded from disk after a restart may have been bought after that copy
was written; only the sweeper, which asks PostgreSQL, releases those. So for one hold
lifetime after the server started, the listener looks at each hold's creation time
and leaves the reloaded ones alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from app import metrics
from app.background.stopping import pause
from app.store import keys
from app.store.client import redis_now_ms, reloaded_hold, server_started_ms
from app.store.expiry_events import enable_expiry_events, expired_keys
from app.store.holds import HoldStore, ReleaseOutcome, ReleaseReason

log = logging.getLogger(__name__)

RELOAD_SLACK_MS = 30_000


class ExpiryListener:
    def __init__(
        self,
        hold_store: HoldStore,
        node_clients: Callable[[], list[Redis]],
        stopping: asyncio.Event | None = None,
        hold_lifetime_ms: int = 0,
    ) -> None:
        self.hold_store = hold_store
        self.node_clients = node_clients
        self.stopping = stopping or asyncio.Event()
        self.subscribed = asyncio.Event()
        # How long after a Redis start a reloaded hold's timer may still fire (its TTL),
        # plus slack for events that queue up behind others.
        self.reload_window_ms = hold_lifetime_ms + RELOAD_SLACK_MS

    async def run(self) -> None:
        nodes = self.node_clients()
        await asyncio.gather(*(self._listen(node) for node in nodes))

    async def _listen(self, node: Redis) -> None:
        backoff = 0.1
        first = True
        while not self.stopping.is_set():
            try:
                await enable_expiry_events(node)
                async with expired_keys(node) as pubsub:
                    if not first:
                        metrics.REDIS_RECONNECTS.labels(task="expiry").inc()
                        log.info("expiry listener resubscribed")
                    first = False
                    reload = await self._reload_guard(node)
                    self.subscribed.set()
                    backoff = 0.1
                    while not self.stopping.is_set():
                        message = await pubsub.get_message(timeout=1.0)
                        if message and message.get("type") == "message":
                            await self._on_expired(str(message["data"]), reload)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self.subscribed.clear()
                metrics.BACKGROUND_ERRORS.labels(task="expiry").inc()
                log.warning("expiry listener lost Redis: %s; retrying", type(exc).__name__)
                await pause(self.stopping, backoff)  # reconnect backoff
                backoff = min(backoff * 2, 5.0)

    async def _reload_guard(self, node: Redis) -> tuple[int, float]:
        """(when the server started in its ms, until when in loop time its holds may be
        reloaded ones). Read on every (re)subscribe: a restart always breaks the pubsub."""
        started_ms = await server_started_ms(node)
        now_ms = await redis_now_ms(node)
        left_ms = started_ms + self.reload_window_ms - now_ms
        return started_ms, asyncio.get_running_loop().time() + max(left_ms, 0) / 1000

    async def _reloaded(self, ref: keys.HoldRef, started_ms: int) -> bool:
        raw = await self.hold_store.entry(ref)
        return raw is not None and reloaded_hold(raw, started_ms)

    async def _on_expired(self, key: str, reload: tuple[int, float] = (0, 0.0)) -> None:
        ref = keys.parse_timer_key(key)
        if ref is None:
            return
        started_ms, check_until = reload
        try:
            if asyncio.get_running_loop().time() < check_until and await self._reloaded(
                ref, started_ms
            ):
                return  # the sweeper asks PostgreSQL about it first
            result = await self.hold_store.release(ref, ReleaseReason.EXPIRED)
        except RedisError:
            metrics.BACKGROUND_ERRORS.labels(task="expiry").inc()
            return  # the sweeper will release it
        if result.outcome is ReleaseOutcome.RELEASED:
            metrics.HOLDS_EXPIRED.labels(layer="keyspace").inc()
            metrics.EXPIRY_LAG.observe(max(result.lag_ms, 0) / 1000)
