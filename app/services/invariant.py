"""Each drop's invariant, Redis's counters against PostgreSQL's facts: what the reconciler
repairs, `sneakerdrop check` prints and the operator console shows.

  total (PostgreSQL) == total (Redis)
  sold  (PostgreSQL purchases) == sold (Redis)
  available + live holds + sold == total, and available >= 0,

and the same for each size of a sized drop. Reading only: nothing here repairs.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.db import drops as drop_rows
from app.db.session import Database
from app.domain import SizeFact
from app.store.drops import DropStore, SizeCount


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


async def check_drops(db: Database, drop_store: DropStore) -> list[DropCheck]:
    """Every drop PostgreSQL has, checked against Redis (a few round trips in all)."""
    async with db.begin() as session:
        rows = await drop_rows.all_drops(session)
        sold = await drop_rows.sold_counts(session)
        sold_by_size = await drop_rows.sold_by_size(session)
    counts_of = await drop_store.counts_of([row.id for row in rows])
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
