"""Layer 3: the once-a-minute safety net that checks and repairs each drop.

For every drop in PostgreSQL it compares Redis's counters with the facts:
  total (PostgreSQL) == total (Redis)
  sold  (PostgreSQL purchases) == sold (Redis)
  available + live holds + sold == total, and available >= 0,
and the same for each size of a sized drop. A drop Redis lost is rebuilt; holds Redis still has but PostgreSQL shows as
purchased (Redis rolled back to an older snapshot) are committed; drifted
counters are repaired by drop_rebuild.lua, which refuses while a purchase is in
flight (retried next pass). Overdue holds are swept as well, and ended holds
past their retention forgotten.
"""

from __future__ import annotations

import logging

from app import metrics
from app.background.sweeper import Sweeper
from app.db.session import Database
from app.services.invariant import DropCheck, check_drops
from app.services.rebuild import rebuild_drop
from app.services.settlement import commit_the_sold
from app.store import keys
from app.store.drops import DropStore, RebuildMode, RebuildOutcome
from app.store.holds import HoldStore

log = logging.getLogger(__name__)


class Reconciler:
    def __init__(self, db: Database, drop_store: DropStore, hold_store: HoldStore) -> None:
        self.db = db
        self.drop_store = drop_store
        self.hold_store = hold_store
        self.sweeper = Sweeper(hold_store, db)

    async def check(self) -> list[DropCheck]:
        return await check_drops(self.db, self.drop_store)

    async def run_once(self) -> list[DropCheck]:
        """One pass: sweep, check, repair. Returns the checks as found before repair."""
        checks = await self.check()
        mirrored = [c.drop_id for c in checks if c.total is not None]
        await self.sweeper.sweep(mirrored, "reconciler")
        await self.sweeper.prune(mirrored)
        for check in checks:
            metrics.DRIFT.labels(drop=check.drop_id).set(check.drift)
            if not check.healthy:
                await self._repair(check)
        await self.drop_store.mark_index_loaded()
        metrics.RECONCILER_RUNS.inc()  # a completed pass
        return checks

    async def _repair(self, check: DropCheck) -> None:
        if check.total is None:
            if await rebuild_drop(self.db, self.drop_store, check.drop_id, RebuildMode.INIT):
                metrics.RECONCILER_REPAIRS.labels(kind="rebuilt").inc()
                log.warning("drop rebuilt from PostgreSQL", extra={"drop": check.drop_id})
            return
        if check.sold != check.sold_pg:
            await self._commit_purchased_holds(check.drop_id)
        outcome = await rebuild_drop(self.db, self.drop_store, check.drop_id, RebuildMode.REPAIR)
        if outcome is None:
            return
        if outcome is RebuildOutcome.BUSY:
            log.info("repair deferred: purchase in flight", extra={"drop": check.drop_id})
            return
        metrics.RECONCILER_REPAIRS.labels(kind=outcome.value.lower()).inc()
        log.warning(
            "drop counters repaired",
            extra={"drop": check.drop_id, "drift": check.drift, "outcome": outcome.value},
        )

    async def _commit_purchased_holds(self, drop_id: str) -> None:
        """Live holds that PostgreSQL says were purchased (Redis rolled back): commit them."""
        live = await self.hold_store.hold_ids(drop_id)
        refs = [r for r in map(keys.parse_hold_id, live) if r is not None]
        for _ in await commit_the_sold(self.db, self.hold_store, refs):
            metrics.RECONCILER_REPAIRS.labels(kind="committed").inc()
