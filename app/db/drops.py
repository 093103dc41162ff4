"""Drop rows and the purchase facts the mirror is built from."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Drop, Purchase
from app.domain import (
    OPEN_ACCESS,
    Access,
    AccessSettings,
    DropDefinition,
    SizeFact,
    drop_fields_of,
)


async def lock_for_rebuild(session: AsyncSession, drop_id: str) -> None:
    """Exclusive per-drop lock, held while a drop's Redis counters are rebuilt from here.

    Sales hold the shared side (`record_sale`, app/db/sales.py) for their one statement,
    so a rebuild counts either all of an in-flight purchase or none of it.
    """
    await session.execute(select(func.pg_advisory_xact_lock(_drop_lock_key(drop_id))))


async def next_rebuild_epoch(session: AsyncSession) -> int:
    """A new epoch for a rebuild, taken under its lock: larger than any before it."""
    return int((await session.execute(select(func.nextval("drop_rebuild_epochs")))).scalar_one())


async def record_rebuild_epoch(session: AsyncSession, drop_id: str, epoch: int) -> None:
    """From this transaction's commit on, a sale whose claim read an older epoch is refused
    (`record_sale`). Never moves back: a rebuild whose commit failed left Redis newer."""
    await session.execute(
        update(Drop)
        .where(Drop.id == drop_id)
        .values(redis_epoch=func.greatest(Drop.redis_epoch, epoch))
    )


def _drop_lock_key(drop_id: str) -> Any:
    return func.hashtextextended("drop:" + drop_id, 0)


def to_definition(row: Drop) -> DropDefinition:
    return DropDefinition(
        id=row.id,
        cancelled=row.state == "cancelled",
        sizes=tuple(size.label for size in row.sizes),
        access=access_of(row),
        **drop_fields_of(row),
    )


def access_of(row: Drop) -> AccessSettings:
    if row.access == Access.OPEN:
        return OPEN_ACCESS
    return AccessSettings(
        access=Access(row.access),
        admit_per_minute=row.admit_per_minute,
        pass_seconds=row.pass_seconds,
        closes_at=row.closes_at,
        claim_seconds=row.claim_seconds,
        seed=row.fairness_seed.hex() if row.fairness_seed is not None else None,
    )


async def size_facts(session: AsyncSession, row: Drop) -> list[SizeFact]:
    """Each size of the drop with its total and units sold, in the admin's order."""
    if not row.sizes:
        return []
    stmt = (
        select(Purchase.size, func.count())
        .where(Purchase.drop_id == row.id, Purchase.size.is_not(None))
        .group_by(Purchase.size)
    )
    sold = {size: int(n) for size, n in (await session.execute(stmt)).all()}
    return [SizeFact(s.label, s.total_stock, sold.get(s.label, 0)) for s in row.sizes]


async def get(session: AsyncSession, drop_id: str, *, lock: bool = False) -> Drop | None:
    stmt = select(Drop).where(Drop.id == drop_id)
    if lock:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def all_drops(session: AsyncSession) -> list[Drop]:
    return list((await session.execute(select(Drop).order_by(Drop.starts_at))).scalars())


async def sold_count(session: AsyncSession, drop_id: str) -> int:
    stmt = select(func.count()).select_from(Purchase).where(Purchase.drop_id == drop_id)
    return int((await session.execute(stmt)).scalar_one())


async def sold_counts(session: AsyncSession) -> dict[str, int]:
    stmt = select(Purchase.drop_id, func.count()).group_by(Purchase.drop_id)
    return {drop_id: int(n) for drop_id, n in (await session.execute(stmt)).all()}


async def sold_by_size(session: AsyncSession) -> dict[tuple[str, str], int]:
    """(drop id, size) -> purchases, for every sized drop."""
    stmt = (
        select(Purchase.drop_id, Purchase.size, func.count())
        .where(Purchase.size.is_not(None))
        .group_by(Purchase.drop_id, Purchase.size)
    )
    return {(d, str(size)): int(n) for d, size, n in (await session.execute(stmt)).all()}


async def purchases_by_user(session: AsyncSession, drop_id: str) -> dict[str, int]:
    stmt = (
        select(Purchase.user_id, func.count())
        .where(Purchase.drop_id == drop_id)
        .group_by(Purchase.user_id)
    )
    return {user_id: int(n) for user_id, n in (await session.execute(stmt)).all()}
