"""Rebuilding a drop's Redis counters from PostgreSQL's facts.

The rebuild holds the drop's exclusive advisory lock while it counts purchases and runs
drop_rebuild.lua, so an in-flight sale is counted entirely or not at all. It takes a new
epoch under that lock and records it on both sides: a sale whose claim read an older
epoch from Redis is refused by PostgreSQL (`record_sale`), since the rebuild may have
counted its unit as available again.
"""

from __future__ import annotations

from app.db import drops as drop_rows
from app.db.session import Database
from app.store.drops import DropStore, RebuildMode, RebuildOutcome

BUILT = (RebuildOutcome.BUILT, RebuildOutcome.OVERSOLD)


async def rebuild_drop(
    db: Database, drop_store: DropStore, drop_id: str, mode: RebuildMode
) -> RebuildOutcome | None:
    """Build (INIT) or repair (REPAIR) one drop; None when PostgreSQL has no such drop."""
    async with db.begin() as session:
        row = await drop_rows.get(session, drop_id)
        if row is None:
            return None
        await drop_rows.lock_for_rebuild(session, drop_id)
        epoch = await drop_rows.next_rebuild_epoch(session)
        expected_sold = None
        if mode is RebuildMode.REPAIR:
            # Repair only if no sale was counted since this read (drop_rebuild.lua).
            expected_sold = (await drop_store.counters(drop_id) or (0, 0, 0, 0))[2]
        outcome, _ = await drop_store.rebuild(
            mode,
            drop_rows.to_definition(row),
            await drop_rows.sold_count(session, drop_id),
            await drop_rows.purchases_by_user(session, drop_id),
            expected_sold=expected_sold,
            sizes=await drop_rows.size_facts(session, row),
            epoch=epoch,
        )
        if outcome in BUILT:
            await drop_rows.record_rebuild_epoch(session, drop_id, epoch)
    return outcome
