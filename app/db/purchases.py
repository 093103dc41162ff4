"""Purchase rows: the system of record for sales. Reads here; the sale itself, the
sweeper's settlement of a stale attempt and the purchase path's own lookup of a
reservation's purchase are in app/db/sales.py."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Purchase


async def of_user(session: AsyncSession, user_id: str, limit: int = 200) -> list[Purchase]:
    stmt = (
        select(Purchase)
        .where(Purchase.user_id == user_id)
        .order_by(Purchase.purchased_at.desc())
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars())


async def purchased_among(session: AsyncSession, hold_ids: list[str]) -> dict[str, datetime]:
    """Which of these reservations have a purchase (reservation id -> purchasedAt)."""
    if not hold_ids:
        return {}
    stmt = select(Purchase.reservation_id, Purchase.purchased_at).where(
        Purchase.reservation_id.in_(hold_ids)
    )
    return {rid: at for rid, at in (await session.execute(stmt)).all()}
