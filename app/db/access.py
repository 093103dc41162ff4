"""The fairness record of queue and draw drops in PostgreSQL, for audit.

When a drop's order is fixed (the pre-queue at startsAt, the draw at closesAt) its
ordered entries are written here with their rank keys and positions, and the drop's
`order_fixed_at` is set: from then on the seed is public (the fairness routes read it
from here). A draw entry's outcome follows it as the draw settles. Rows go in with COPY:
a draw of 100,000 entries is recorded in well under a second.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

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
    db: Database, drop_id: str, entries: Sequence[OrderedEntry], fixed_at: datetime
) -> bool:
    """Write the ordered entries and mark the order fixed, once. False when it already was
    (another leader, or this one before a restart, got there first)."""
    async with db.sales.transaction() as conn:
        fixed = await conn.fetchval(
            "SELECT order_fixed_at FROM drops WHERE id = $1 FOR UPDATE", drop_id
        )
        if fixed is not None:
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
            "UPDATE drops SET order_fixed_at = $2, ordered_entries = $3 WHERE id = $1",
            drop_id,
            fixed_at,
            len(entries),
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


async def ordered_entries(db: Database, drop_id: str) -> list[asyncpg.Record]:
    """(entry_id, rank_key, position) of the drop's ordered entries, by position."""
    async with db.sales.transaction() as conn:
        return list(
            await conn.fetch(
                "SELECT entry_id, rank_key, position FROM access_entries WHERE drop_id = $1"
                " ORDER BY position",
                drop_id,
            )
        )


async def outcomes_of(db: Database, drop_id: str) -> dict[str, int]:
    """How many of the drop's entries have each outcome (for `check` and the console)."""
    async with db.sales.transaction() as conn:
        rows = await conn.fetch(
            "SELECT coalesce(outcome, 'none'), count(*) FROM access_entries"
            " WHERE drop_id = $1 GROUP BY 1",
            drop_id,
        )
    return {str(r[0]): int(r[1]) for r in rows}
