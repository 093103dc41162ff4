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
from dataclasses import dataclass

from app import metrics
from app.background.sweeper import Sweeper
from app.db import drops as drop_rows
from app.db.session import Database
from app.domain import SizeFact
from app.services.settlement import commit_the_sold
from app.store import keys
from app.store.drops import DropStore, RebuildMode, RebuildOutcome, SizeCount
from app.store.holds import HoldStore

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DropCheck:
    drop_id: str
    name: str
    total_pg: int
    sold_pg: int
    total: int | None  # None: Redis does not have the drop
    available: int
    sold: int
    live_holds: int
    # Sizes whose counters disagree with PostgreSQL or break the invariant, as
    # "label: reason" (a drop without sizes has none).
    size_problems: tuple[str, ...] = ()

    @property
    def drift(self) -> int:
        """Units off the invariant, counted against PostgreSQL's facts (0 when healthy)."""
        if self.total is None:
            return self.total_pg - self.sold_pg
        return self.available + self.live_holds + self.sold_pg - self.total_pg

    @property
    def healthy(self) -> bool:
        return (
            self.total is not None
            and self.total == self.total_pg
            and self.sold == self.sold_pg
            and self.available >= 0
            and self.available + self.live_holds + self.sold == self.total
            and not self.size_problems
        )


class Reconciler:
    def __init__(self, db: Database, drop_store: DropStore, hold_store: HoldStore) -> None:
        self.db = db
        self.drop_store = drop_store
        self.hold_store = hold_store
        self.sweeper = Sweeper(hold_store, db)

    async def check(self) -> list[DropCheck]:
        async with self.db.begin() as session:
            rows = await drop_rows.all_drops(session)
            sold = await drop_rows.sold_counts(session)
            sold_by_size = await drop_rows.sold_by_size(session)
        counts_of = await self.drop_store.counts_of([row.id for row in rows])
        checks = []
        for row in rows:
            counts = counts_of[row.id]
            total, available, redis_sold, live = counts[0] if counts else (None, 0, 0, 0)
            facts = [
                SizeFact(s.label, s.total_stock, sold_by_size.get((row.id, s.label), 0))
                for s in row.sizes
            ]
            checks.append(
                DropCheck(
                    row.id,
                    row.name,
                    row.total_stock,
                    sold.get(row.id, 0),
                    total,
                    available,
                    redis_sold,
                    live,
                    _size_problems(facts, counts[1]) if counts else (),
                )
            )
        return checks

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
        async with self.db.begin() as session:
            row = await drop_rows.get(session, check.drop_id)
            if row is None:
                return
            definition = drop_rows.to_definition(row)
        if check.total is None:
            async with self.db.begin() as session:
                await drop_rows.lock_for_rebuild(session, row.id)
                sold = await drop_rows.sold_count(session, row.id)
                by_user = await drop_rows.purchases_by_user(session, row.id)
                sizes = await drop_rows.size_facts(session, row)
                await self.drop_store.rebuild(
                    RebuildMode.INIT, definition, sold, by_user, sizes=sizes
                )
            metrics.RECONCILER_REPAIRS.labels(kind="rebuilt").inc()
            log.warning("drop rebuilt from PostgreSQL", extra={"drop": row.id})
            return
        if check.sold != check.sold_pg:
            await self._commit_purchased_holds(row.id)
        async with self.db.begin() as session:
            await drop_rows.lock_for_rebuild(session, row.id)
            expected_sold = (await self.drop_store.counters(row.id) or (0, 0, 0, 0))[2]
            sold = await drop_rows.sold_count(session, row.id)
            by_user = await drop_rows.purchases_by_user(session, row.id)
            sizes = await drop_rows.size_facts(session, row)
            outcome, _ = await self.drop_store.rebuild(
                RebuildMode.REPAIR,
                definition,
                sold,
                by_user,
                expected_sold=expected_sold,
                sizes=sizes,
            )
        if outcome is RebuildOutcome.BUSY:
            log.info("repair deferred: purchase in flight", extra={"drop": row.id})
            return
        metrics.RECONCILER_REPAIRS.labels(kind=outcome.value.lower()).inc()
        log.warning(
            "drop counters repaired",
            extra={"drop": row.id, "drift": check.drift, "outcome": outcome.value},
        )

    async def _commit_purchased_holds(self, drop_id: str) -> None:
        """Live holds that PostgreSQL says were purchased (Redis rolled back): commit them."""
        live = await self.hold_store.hold_ids(drop_id)
        refs = [r for r in map(keys.parse_hold_id, live) if r is not None]
        for _ in await commit_the_sold(self.db, self.hold_store, refs):
            metrics.RECONCILER_REPAIRS.labels(kind="committed").inc()


def _size_problems(facts: list[SizeFact], counts: list[SizeCount]) -> tuple[str, ...]:
    """Each size's counters against PostgreSQL's facts and the invariant, per size."""
    if [f.size for f in facts] != [c.size for c in counts]:
        return ("sizes: Redis has " + ", ".join(c.size for c in counts),)
    problems = []
    for fact, count in zip(facts, counts, strict=True):
        if count.total != fact.total:
            problems.append(f"{fact.size}: total {count.total}, PostgreSQL {fact.total}")
        if count.sold != fact.sold:
            problems.append(f"{fact.size}: sold {count.sold}, PostgreSQL {fact.sold}")
        if count.available < 0 or count.available + count.live_holds + count.sold != count.total:
            problems.append(
                f"{fact.size}: available {count.available} + held {count.live_holds}"
                f" + sold {count.sold} != total {count.total}"
            )
    return tuple(problems)
