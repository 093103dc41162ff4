"""Purchase rows: the system of record for sales.

A purchase and a sweeper's void of the same reservation serialise on a
transaction-scoped advisory lock keyed by the reservation id. Without it, a
purchaser stalled past its claim deadline could insert its row after the
sweeper decided "no purchase" and released the unit: sold and back in stock.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.drops import lock_for_sale
from app.db.models import Purchase, User, VoidedClaim


async def _lock_reservation(session: AsyncSession, reservation_id: str) -> None:
    await session.execute(
        select(func.pg_advisory_xact_lock(func.hashtextextended(reservation_id, 0)))
    )


async def by_reservation(session: AsyncSession, reservation_id: str) -> Purchase | None:
    stmt = select(Purchase).where(Purchase.reservation_id == reservation_id)
    return (await session.execute(stmt)).scalar_one_or_none()


async def record(
    session: AsyncSession,
    *,
    purchase_id: str,
    reservation_id: str,
    drop_id: str,
    user_id: str,
    price_cents: int,
    currency: str,
) -> tuple[Purchase | None, bool]:
    """Insert the purchase of a reservation once.

    Returns (purchase, created). (None, False) when the sweeper already voided
    this claim: the hold is gone, the purchase must not happen.
    """
    await lock_for_sale(session, drop_id)
    await _lock_reservation(session, reservation_id)
    existing = await by_reservation(session, reservation_id)
    if existing is not None:
        return existing, False
    if await session.get(VoidedClaim, reservation_id) is not None:
        return None, False
    stmt = (
        insert(Purchase)
        .values(
            id=purchase_id,
            reservation_id=reservation_id,
            drop_id=drop_id,
            user_id=user_id,
            price_cents=price_cents,
            currency=currency,
        )
        .returning(Purchase)
    )
    return (await session.execute(stmt)).scalar_one(), True


async def void_or_find(session: AsyncSession, reservation_id: str) -> Purchase | None:
    """The sweeper's decision on a stale claim: the purchase if it exists, else fence it out."""
    await _lock_reservation(session, reservation_id)
    existing = await by_reservation(session, reservation_id)
    if existing is None:
        await session.execute(
            insert(VoidedClaim).values(reservation_id=reservation_id).on_conflict_do_nothing()
        )
    return existing


async def of_user(session: AsyncSession, user_id: str, limit: int = 200) -> list[Purchase]:
    stmt = (
        select(Purchase)
        .where(Purchase.user_id == user_id)
        .order_by(Purchase.purchased_at.desc())
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars())


async def buyer_name(session: AsyncSession, user_id: str) -> str:
    name = (await session.execute(select(User.display_name).where(User.id == user_id))).scalar()
    return name or "someone"


async def purchased_among(session: AsyncSession, reservation_ids: list[str]) -> dict[str, datetime]:
    """Which of these reservations have a purchase (reservation id -> purchasedAt)."""
    if not reservation_ids:
        return {}
    stmt = select(Purchase.reservation_id, Purchase.purchased_at).where(
        Purchase.reservation_id.in_(reservation_ids)
    )
    return {rid: at for rid, at in (await session.execute(stmt)).all()}
