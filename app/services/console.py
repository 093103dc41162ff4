"""What the operator console reads: each drop's invariant and its live figures.

The invariant is the reconciler's own check (app/services/invariant.py, what
`sneakerdrop check` prints), so the console and the command can never disagree about a
drop; each size's figures are read beside it, Redis's counters next to PostgreSQL's
facts.
The live figures are Redis's counters plus the reserve tally of the last seconds
(app/reserve_tally.py), which sums every process's outcomes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from app import reserve_tally
from app.db import drops as drop_rows
from app.db.session import Database
from app.domain import SizeFact
from app.errors import DropNotFound
from app.services.drops import DropService
from app.services.invariant import DropCheck, check_drops
from app.store import keys
from app.store.drops import DropStore, SizeCount
from app.store.tally import TallyStore


@dataclass(frozen=True, slots=True)
class SizeInvariant:
    """One size: Redis's counters, PostgreSQL's facts, and whether they add up."""

    count: SizeCount
    fact: SizeFact | None  # None: PostgreSQL has no such size (Redis drifted)

    @property
    def healthy(self) -> bool:
        c = self.count
        return (
            self.fact is not None
            and c.total == self.fact.total
            and c.sold == self.fact.sold
            and c.available >= 0
            and c.available + c.live_holds + c.sold == c.total
        )


@dataclass(frozen=True, slots=True)
class Invariant:
    check: DropCheck
    sizes: list[SizeInvariant]
    checked_at: datetime


@dataclass(frozen=True, slots=True)
class Stats:
    drop_id: str
    last_second: int  # unix second of the newest entry of `outcomes`
    outcomes: list[dict[str, int]]  # reserves by code, one dict per second, oldest first
    total: int
    available: int
    sold: int
    live_holds: int
    sizes: list[SizeCount]


class ConsoleService:
    def __init__(
        self,
        db: Database,
        drop_store: DropStore,
        drop_service: DropService,
        tally: TallyStore,
    ) -> None:
        self.db = db
        self.drop_store = drop_store
        self.drop_service = drop_service
        self.tally = tally

    async def invariants(self) -> list[Invariant]:
        """Every drop's check, as `sneakerdrop check` prints it (no per-size detail)."""
        now = datetime.now(UTC)
        return [Invariant(check, [], now) for check in await check_drops(self.db, self.drop_store)]

    async def invariant(self, drop_id: str) -> Invariant:
        """One drop's check, and each of its sizes side by side with PostgreSQL's facts.

        The check reads every drop in one pass (a few round trips whatever their
        number); picking one from it keeps a single definition of the check."""
        if not keys.DROP_ID_RE.match(drop_id):
            raise DropNotFound()
        checks = await check_drops(self.db, self.drop_store)
        found = [c for c in checks if c.drop_id == drop_id]
        if not found:
            raise DropNotFound()
        async with self.db.begin() as session:
            row = await drop_rows.get(session, drop_id)
            facts = await drop_rows.size_facts(session, row) if row is not None else []
        counts = await self.drop_store.counts(drop_id)
        by_label = {fact.size: fact for fact in facts}
        sizes = [SizeInvariant(c, by_label.get(c.size)) for c in (counts[1] if counts else [])]
        return Invariant(found[0], sizes, datetime.now(UTC))

    async def stats(self, drop_id: str, seconds: int) -> Stats:
        """The drop's counters now and its reserve outcomes over the last `seconds`."""
        await self.drop_service.get(drop_id)  # 404 for an unknown drop; mirrors a missing one
        counts = await self.drop_store.counts(drop_id)
        if counts is None:
            raise DropNotFound()
        (total, available, sold, live), sizes = counts
        last, outcomes = await reserve_tally.recent(self.tally, drop_id, seconds)
        return Stats(drop_id, last, outcomes, total, available, sold, live, sizes)
