"""Layer 2 of expiry: scan each drop's due set for deadlines passed.

Catches what keyspace events missed (a listener that was down, a key Redis had
not expired yet). ACTIVE holds go through release.lua, which does nothing to a
hold that another layer released first. PURCHASING holds past their claim
deadline (a purchaser crashed between claim and commit) are settled by asking
PostgreSQL: commit when the purchase exists, otherwise void that attempt there and
put the hold back to ACTIVE until its own deadline. ACTIVE holds that Redis reloaded from disk (created before the server
last started) may have been bought after that copy was written: PostgreSQL is
asked about those first, and the sold ones are committed, never released. `prune`,
run by the reconciler, forgets ended-hold tombstones past their retention.

`sweep_pass` is the leader's pass every `SWEEP_INTERVAL_MS`. It probes a drop only
when something in it may be due. Every live hold has an entry in the due set, and a
deadline written after a probe at time P falls at P + horizon or later (the horizon is
the shorter of the hold's time to live and the purchase claim timeout: a new hold's
deadline or a new claim's). So a drop whose earliest entry at P was at E (none: an
ended or sold-out drop) needs no probe before min(E, P + horizon); the pass probes it
then, or half a horizon after P at the latest. The one deadline written earlier than
that is a failed purchase's hold going back to ACTIVE with what was left of its time:
its timer key is re-armed, so the keyspace listener still releases it on time. (The
horizon comes from this process's settings; a process with a shorter hold time makes
the sweeper up to half a horizon late for its holds, never wrong, and the reconciler
probes every drop once a pass.)
"""

from __future__ import annotations

import logging

from app import metrics
from app.db import sales
from app.db.session import Database
from app.errors import ServiceUnavailable
from app.services.settlement import commit_the_sold
from app.store import keys
from app.store.client import ServerStart, reloaded_hold
from app.store.entries import parse_entry
from app.store.holds import (
    AbortOutcome,
    HoldStore,
    ReleaseOutcome,
    ReleaseReason,
)

log = logging.getLogger(__name__)

BATCH = 500  # due holds released per round trip
SCAN_CHUNK = 100  # drops asked in one round trip whether anything is due
PRUNE_BATCH = 1000  # ended holds forgotten per round trip
CLOSED_RETENTION_MS = 6 * 3600 * 1000  # how long an ended hold still answers 410/409, not 404


class Sweeper:
    def __init__(self, hold_store: HoldStore, db: Database, horizon_ms: int = 0) -> None:
        """`horizon_ms`: the soonest any deadline written from now on can fall due
        (see the module docstring); 0 probes every drop on every pass."""
        self.hold_store = hold_store
        self.db = db
        self.horizon_ms = horizon_ms
        self.next_probe_ms: dict[str, int] = {}  # drop id -> Redis time of its next probe
        self.redis_run_id = ""  # the run of Redis that schedule was made on

    async def sweep_pass(self, drop_ids: list[str]) -> int:
        """The leader's pass: the drops whose next probe is due (and drops not seen
        before); returns how many holds it released. A restarted Redis may have
        reloaded entries into any drop, so a new run id starts the schedule afresh."""
        if not drop_ids:
            return 0
        server = await self.hold_store.server_start()
        now_ms = await self.hold_store.now_ms()
        if server.run_id != self.redis_run_id:
            self.next_probe_ms, self.redis_run_id = {}, server.run_id
        schedule = self.next_probe_ms
        probe = [d for d in drop_ids if schedule.get(d, 0) <= now_ms]
        return await self._sweep(probe, now_ms, server, "sweeper", plan=True)

    async def sweep(self, drop_ids: list[str], layer: str = "sweeper") -> int:
        """One pass over every given drop; returns how many holds it released."""
        if not drop_ids:
            return 0
        server = await self.hold_store.server_start()
        now_ms = await self.hold_store.now_ms()
        return await self._sweep(drop_ids, now_ms, server, layer, plan=False)

    async def _sweep(
        self, drop_ids: list[str], now_ms: int, server: ServerStart, layer: str, plan: bool
    ) -> int:
        """Most drops have nothing due (sold out long ago, or holds not yet at their
        deadline), so the drops are asked in chunks, one round trip per chunk, and
        only those with a hold due get the per-drop work: a pass over thousands of
        quiet drops costs a few round trips instead of one per drop. With `plan`, each
        probed drop's next probe is set from its earliest deadline."""
        earliest = await self.hold_store.earliest_due(drop_ids, SCAN_CHUNK)
        released = 0
        for drop_id, score in earliest.items():
            if plan:
                self.next_probe_ms[drop_id] = self._next_probe_ms(score, now_ms)
            if score is not None and score <= now_ms:
                released += await self._sweep_drop(drop_id, now_ms, server.started_ms, layer)
        return released

    def _next_probe_ms(self, earliest: float | None, now_ms: int) -> int:
        """The next pass due for a drop probed at `now_ms`: the next one when something
        was due (it is swept now; what is left is unknown), else its earliest deadline,
        and never later than half a horizon from now."""
        latest = now_ms + self.horizon_ms // 2
        if earliest is None:
            return latest
        if earliest <= now_ms:
            return now_ms
        return min(int(earliest), latest)

    async def prune(self, drop_ids: list[str]) -> int:
        """Forget ended holds past their retention (they answer 404 from then on);
        returns how many. The reconciler calls it once a pass: the retention is hours,
        so a minute late costs nothing, while every sweep would pay the scan."""
        if not drop_ids:
            return 0
        cutoff_ms = await self.hold_store.now_ms() - CLOSED_RETENTION_MS
        pruned = 0
        earliest = await self.hold_store.earliest_closed(drop_ids, SCAN_CHUNK)
        for drop_id, score in earliest.items():
            if score is not None and score <= cutoff_ms:
                pruned += await self._prune_drop(drop_id, cutoff_ms)
        return pruned

    async def _sweep_drop(self, drop_id: str, now_ms: int, started_ms: int, layer: str) -> int:
        released = 0
        while True:
            due = await self.hold_store.due_ids(drop_id, now_ms, BATCH)
            refs = [r for r in (keys.parse_hold_id(rid) for rid in due) if r is not None]
            if not refs:
                return released
            refs, progressed = await self._spare_sold(drop_id, refs, started_ms)
            results = await self.hold_store.release_many(refs, ReleaseReason.EXPIRED)
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
                    await self.hold_store.forget_due(ref)
                    progressed = True
            if not progressed or len(due) < BATCH:
                return released

    async def _spare_sold(
        self, drop_id: str, refs: list[keys.HoldRef], started_ms: int
    ) -> tuple[list[keys.HoldRef], bool]:
        """Commit the reloaded holds PostgreSQL sold; returns (the holds left to release,
        whether any was committed). When PostgreSQL does not answer, the reloaded holds
        wait for a later pass: their units stay held rather than risk a second sale."""
        entries = await self.hold_store.entries(drop_id, [r.hold_id for r in refs])
        reloaded = {
            ref.hold_id: ref
            for ref, raw in zip(refs, entries, strict=True)
            if raw is not None and reloaded_hold(raw, started_ms)
        }
        if not reloaded:
            return refs, False
        try:
            sold = await commit_the_sold(self.db, self.hold_store, list(reloaded.values()))
        except ServiceUnavailable as exc:
            log.warning("reloaded holds not released: PostgreSQL is not answering (%s)", exc)
            return [r for r in refs if r.hold_id not in reloaded], False
        for hold_id in sold:
            metrics.RECONCILER_REPAIRS.labels(kind="committed").inc()
            log.warning("reloaded hold was sold: committed", extra={"reservation": hold_id})
        return [r for r in refs if r.hold_id not in sold], bool(sold)

    async def settle_claim(self, ref: keys.HoldRef) -> bool:
        """Settle a purchase attempt past its claim deadline with PostgreSQL's answer.

        The purchase exists: committed. It does not: the attempt is voided in PostgreSQL
        (its late insert will do nothing) and the hold is ACTIVE again with its own
        deadline, so the buyer can still buy it; past that deadline its unit returns.
        """
        raw = await self.hold_store.entry(ref)
        if raw is None or not raw.startswith("PURCHASING|"):
            return False  # settled meanwhile
        claim_id = parse_entry(raw).extra
        async with self.db.sales.transaction() as conn:
            sold = await sales.void_or_find(conn, claim_id, ref.hold_id)
        if sold is not None:
            purchase, buyer = sold
            await self.hold_store.commit(ref, buyer, purchase.purchased_at)
            metrics.CLAIMS_RESOLVED.labels(outcome="committed").inc()
            log.info("stale claim committed", extra={"reservation": ref.hold_id})
            return True
        outcome = await self.hold_store.abort(ref, claim_id)
        metrics.CLAIMS_RESOLVED.labels(outcome="voided").inc()
        log.info("stale claim voided", extra={"reservation": ref.hold_id})
        if outcome is AbortOutcome.RESTORED_DUE:
            result = await self.hold_store.release(ref, ReleaseReason.VOIDED)
            if result.outcome is ReleaseOutcome.RELEASED:
                metrics.HOLDS_EXPIRED.labels(layer="sweeper").inc()
        return outcome is not AbortOutcome.NOOP

    async def _prune_drop(self, drop_id: str, cutoff_ms: int) -> int:
        pruned = 0
        while True:
            forgotten = await self.hold_store.prune_closed(drop_id, cutoff_ms, PRUNE_BATCH)
            pruned += forgotten
            if forgotten < PRUNE_BATCH:
                return pruned
