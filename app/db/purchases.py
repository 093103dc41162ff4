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
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.drops import lock_for_sale
from app.db.models import Purchase, User, VoidedClaim
from app.errors import Unauthorized

FOREIGN_KEY_VIOLATION = "23503"


async def _lock_hold(session: AsyncSession, hold_id: str) -> None:
    await session.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(hold_id, 0))))


async def by_hold(session: AsyncSession, hold_id: str) -> Purchase | None:
    stmt = select(Purchase).where(Purchase.reservation_id == hold_id)
    return (await session.execute(stmt)).scalar_one_or_none()


async def record(
    session: AsyncSession,
    *,
    purchase_id: str,
    hold_id: str,
    drop_id: str,
    user_id: str,
    price_cents: int,
    currency: str,
) -> tuple[Purchase | None, bool]:
    """Insert the purchase of a reservation once.

    Returns (purchase, created). (None, False) when the sweeper already voided
    this claim: the hold is gone, the purchase must not happen. Unauthorized when
    the buyer's account no longer exists (its row was deleted after the token was
    issued): the insert wrote nothing, so the caller may undo its claim.
    """
    await lock_for_sale(session, drop_id)
    await _lock_hold(session, hold_id)
    existing = await by_hold(session, hold_id)
    if existing is not None:
        return existing, False
    if await session.get(VoidedClaim, hold_id) is not None:
        return None, False
    stmt = (
        insert(Purchase)
        .values(
            id=purchase_id,
            reservation_id=hold_id,
            drop_id=drop_id,
            user_id=user_id,
            price_cents=price_cents,
            currency=currency,
        )
        .returning(Purchase)
    )
    try:
        return (await session.execute(stmt)).scalar_one(), True
    except IntegrityError as exc:
        if _violates(exc, "fk_purchases_user_id_users"):
            raise Unauthorized("Account no longer exists") from None
        raise


def _violates(exc: IntegrityError, constraint: str) -> bool:
    """Whether `exc` is a foreign key violation of `constraint` (asyncpg names it)."""
    # SQLAlchemy's adapter carries the SQLSTATE; the asyncpg error it wraps, the name.
    chain = (exc.orig, exc.orig.__cause__ if exc.orig is not None else None)
    sqlstates = {getattr(error, "sqlstate", None) for error in chain}
    names = {getattr(error, "constraint_name", None) for error in chain}
    return FOREIGN_KEY_VIOLATION in sqlstates and constraint in names


async def void_or_find(session: AsyncSession, hold_id: str) -> Purchase | None:
    """The sweeper's decision on a stale claim: the purchase if it exists, else fence it out."""
    await _lock_hold(session, hold_id)
    existing = await by_hold(session, hold_id)
    if existing is None:
        await session.execute(
            insert(VoidedClaim).values(reservation_id=hold_id).on_conflict_do_nothing()
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


async def purchased_among(session: AsyncSession, hold_ids: list[str]) -> dict[str, datetime]:
    """Which of these reservations have a purchase (reservation id -> purchasedAt)."""
    if not hold_ids:
        return {}
    stmt = select(Purchase.reservation_id, Purchase.purchased_at).where(
        Purchase.reservation_id.in_(hold_ids)
    )
    return {rid: at for rid, at in (await session.execute(stmt)).all()}
