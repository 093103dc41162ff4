"""The fairness record of queue and draw drops in PostgreSQL.

When a drop's order is fixed (the pre-queue at startsAt, the draw at closesAt) it is
written as one row of `access_orders` (each entry id with its rank key, in position
order), in the transaction that sets the drop's `order_fixed_at`: from then on the seed
is public (the fairness routes read both from here). One insert, however many entries:
the reveal stays within its two seconds. Each entry then gets its own row in
`access_entries` (its user, position and, for a draw, its outcome, which follows it as
the draw settles), written with COPY for audit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from app.db.session import Database


@dataclass(frozen=True, slots=True)
class OrderedEntry:
    entry_id: str
    user_id: str
    rank_key: str
    position: int
    sizes: str | None = None  # a draw entry's size labels, comma-separated
    outcome: str | None = None  # a draw entry's: won, standby, lost
    reservation_id: str | None = None


@dataclass(frozen=True, slots=True)
class FairnessFacts:
    access: str
    seed: bytes | None
    order_fixed_at: datetime | None
    ordered_entries: int | None


COLUMNS = (
    "entry_id",
    "drop_id",
    "user_id",
    "rank_key",
    "position",
    "sizes",
    "outcome",
    "reservation_id",
)


async def record_order(
    db: Database, drop_id: str, ordered: Sequence[tuple[str, str]], fixed_at: datetime
) -> bool:
    """Record the fixed order, (entry id, rank key) in position order, and so reveal the
    seed, once. False when it already was (another leader, or this one before a restart)."""
    async with db.sales.transaction() as conn:
        fixed = await conn.fetchval(
            "SELECT order_fixed_at FROM drops WHERE id = $1 FOR UPDATE", drop_id
        )
        if fixed is not None:
            return False
        await conn.execute(
            "INSERT INTO access_orders (drop_id, entries, ordered, fixed_at)"
            " VALUES ($1, $2, $3, $4)",
            drop_id,
            len(ordered),
            "".join(f"{entry_id} {rank}\n" for entry_id, rank in ordered),
            fixed_at,
        )
        await conn.execute(
            "UPDATE drops SET order_fixed_at = $2, ordered_entries = $3 WHERE id = $1",
            drop_id,
            fixed_at,
            len(ordered),
        )
    return True


async def entries_recorded(db: Database, drop_id: str) -> bool:
    async with db.sales.transaction() as conn:
        found = await conn.fetchval(
            "SELECT entries_recorded_at FROM access_orders WHERE drop_id = $1", drop_id
        )
    return found is not None


async def record_entries(db: Database, drop_id: str, entries: Sequence[OrderedEntry]) -> bool:
    """One `access_entries` row per ordered entry, once (after the order was recorded).
    False when they already were."""
    async with db.sales.transaction() as conn:
        done = await conn.fetchval(
            "SELECT entries_recorded_at FROM access_orders WHERE drop_id = $1 FOR UPDATE",
            drop_id,
        )
        if done is not None:
            return False
        await conn.execute("DELETE FROM access_entries WHERE drop_id = $1", drop_id)
        await conn.copy_records_to_table(
            "access_entries",
            records=[
                (
                    e.entry_id,
                    drop_id,
                    e.user_id,
                    e.rank_key,
                    e.position,
                    e.sizes,
                    e.outcome,
                    e.reservation_id,
                )
                for e in entries
            ],
            columns=COLUMNS,
        )
        await conn.execute(
            "UPDATE access_orders SET entries_recorded_at = now() WHERE drop_id = $1", drop_id
        )
    return True


async def record_outcomes(
    db: Database, drop_id: str, outcomes: Sequence[tuple[str, str, str | None]]
) -> None:
    """(entry id, outcome, reservation id) of draw entries whose outcome changed."""
    if not outcomes:
        return
    async with db.sales.transaction() as conn:
        await conn.execute(
            """
            UPDATE access_entries AS e SET outcome = u.outcome, reservation_id = u.hold
            FROM unnest($2::text[], $3::text[], $4::text[]) AS u(entry_id, outcome, hold)
            WHERE e.drop_id = $1 AND e.entry_id = u.entry_id
            """,
            drop_id,
            [o[0] for o in outcomes],
            [o[1] for o in outcomes],
            [o[2] for o in outcomes],
        )


async def fairness_facts(db: Database, drop_id: str) -> FairnessFacts | None:
    async with db.sales.transaction() as conn:
        row = await conn.fetchrow(
            "SELECT access, fairness_seed, order_fixed_at, ordered_entries FROM drops"
            " WHERE id = $1",
            drop_id,
        )
    if row is None:
        return None
    return FairnessFacts(row[0], row[1], row[2], row[3])


async def ordered_entries(db: Database, drop_id: str) -> list[tuple[str, str, int]]:
    """(entry id, rank key, position) of the drop's fixed order; [] before it is fixed."""
    async with db.sales.transaction() as conn:
        ordered = await conn.fetchval(
            "SELECT ordered FROM access_orders WHERE drop_id = $1", drop_id
        )
    if not ordered:
        return []
    found: list[tuple[str, str, int]] = []
    for position, line in enumerate(ordered.splitlines(), start=1):
        entry_id, rank = line.split(" ")
        found.append((entry_id, rank, position))
    return found


async def outcomes_of(db: Database, drop_id: str) -> dict[str, int]:
    """How many of the drop's entries have each outcome (for `check` and the console)."""
    async with db.sales.transaction() as conn:
        rows = await conn.fetch(
            "SELECT coalesce(outcome, 'none'), count(*) FROM access_entries"
            " WHERE drop_id = $1 GROUP BY 1",
            drop_id,
        )
    return {str(r[0]): int(r[1]) for r in rows}
