"""Layer 2 of expiry: scan each drop's due set for deadlines passed.

Catches what keyspace events missed (a listener that was down, a key Redis had
not expired yet). ACTIVE holds go through release.lua, which does nothing to a
hold that another layer released first. PURCHASING holds past their claim
deadline (a purchaser crashed between claim and commit) are settled by asking
PostgreSQL: commit when the purchase exists, otherwise fence the claim out and
abort it. Also prunes ended-hold tombstones past their retention.
"""

from __future__ import annotations

import logging
from typing import cast

from app import metrics
from app.db import purchases as purchase_rows
from app.db.session import Database
from app.store import keys
from app.store.holds import (
    AbortOutcome,
    HoldStore,
    ReleaseOutcome,
    ReleaseReason,
)

log = logging.getLogger(__name__)

BATCH = 500
CLOSED_RETENTION_MS = 6 * 3600 * 1000  # how long an ended hold still answers 410/409, not 404


class Sweeper:
    def __init__(self, holds: HoldStore, db: Database) -> None:
        self.holds = holds
        self.redis = holds.redis
        self.db = db

    async def sweep(self, drop_ids: list[str], layer: str = "sweeper") -> int:
        """One pass over the given drops; returns how many holds it released."""
        seconds, micros = await self.redis.time()
        now_ms = seconds * 1000 + micros // 1000
        released = 0
        for drop_id in drop_ids:
            released += await self._sweep_drop(drop_id, now_ms, layer)
            await self._prune(drop_id, now_ms)
        return released

    async def _sweep_drop(self, drop_id: str, now_ms: int, layer: str) -> int:
        drop_keys = keys.DropKeys(drop_id)
        released = 0
        while True:
            due = cast(
                list[str],
                await self.redis.zrangebyscore(drop_keys.due, "-inf", now_ms, start=0, num=BATCH),
            )
            refs = [r for r in (keys.parse_reservation_id(rid) for rid in due) if r is not None]
            if not refs:
                return released
            results = await self.holds.release_many(refs, ReleaseReason.EXPIRED)
            progressed = False
            for ref, result in zip(refs, results, strict=True):
                if result.outcome is ReleaseOutcome.RELEASED:
                    released += 1
                    progressed = True
                    metrics.HOLDS_EXPIRED.labels(layer=layer).inc()
                    metrics.EXPIRY_LAG.observe(max(result.lag_ms, 0) / 1000)
                elif result.outcome is ReleaseOutcome.PURCHASING:
                    progressed = await self.settle_claim(ref) or progressed
                elif result.outcome in (ReleaseOutcome.NOT_FOUND, ReleaseOutcome.ALREADY):
                    # A due entry without a live hold (a partial state after a restore).
                    await self.redis.zrem(drop_keys.due, ref.reservation_id)
                    progressed = True
            if not progressed or len(due) < BATCH:
                return released

    async def settle_claim(self, ref: keys.ReservationRef) -> bool:
        """Settle a purchase claim past its deadline with PostgreSQL's answer."""
        async with self.db.begin() as session:
            purchase = await purchase_rows.void_or_find(session, ref.reservation_id)
            name = await purchase_rows.buyer_name(session, ref.user_id) if purchase else ""
        if purchase is not None:
            await self.holds.commit(ref, name, purchase.purchased_at)
            metrics.CLAIMS_RESOLVED.labels(outcome="committed").inc()
            log.info("stale claim committed", extra={"reservation": ref.reservation_id})
            return True
        # PostgreSQL now refuses this reservation's purchase for good, so the hold ends
        # here rather than going back to ACTIVE: its unit returns to stock once.
        outcome = await self.holds.abort(ref, "")
        result = await self.holds.release(ref, ReleaseReason.VOIDED)
        metrics.CLAIMS_RESOLVED.labels(outcome="voided").inc()
        log.info("stale claim voided", extra={"reservation": ref.reservation_id})
        if result.outcome is ReleaseOutcome.RELEASED:
            metrics.HOLDS_EXPIRED.labels(layer="sweeper").inc()
        return outcome is not AbortOutcome.NOOP

    async def _prune(self, drop_id: str, now_ms: int) -> None:
        drop_keys = keys.DropKeys(drop_id)
        old = cast(
            list[str],
            await self.redis.zrangebyscore(
                drop_keys.closed_at, "-inf", now_ms - CLOSED_RETENTION_MS, start=0, num=1000
            ),
        )
        if old:
            pipe = self.redis.pipeline(transaction=True)
            pipe.hdel(drop_keys.closed, *old)
            pipe.zrem(drop_keys.closed_at, *old)
            await pipe.execute()
