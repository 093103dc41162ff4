"""Refresh-token families and their tokens (stored as SHA-256 digests)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import RefreshFamily, RefreshToken


async def create_family(session: AsyncSession, family_id: str, user_id: str) -> None:
    session.add(RefreshFamily(id=family_id, user_id=user_id))
    await session.flush()


async def add_token(
    session: AsyncSession, *, token_id: str, family_id: str, token_hash: str, expires_at: datetime
) -> None:
    session.add(
        RefreshToken(id=token_id, family_id=family_id, token_hash=token_hash, expires_at=expires_at)
    )
    await session.flush()


async def lock_token(
    session: AsyncSession, token_id: str
) -> tuple[RefreshToken, RefreshFamily] | None:
    """The token and its family, row-locked, so two refreshes of one token serialise."""
    stmt = (
        select(RefreshToken, RefreshFamily)
        .join(RefreshFamily, RefreshFamily.id == RefreshToken.family_id)
        .where(RefreshToken.id == token_id)
        .with_for_update()
    )
    row = (await session.execute(stmt)).first()
    return (row[0], row[1]) if row else None


async def mark_rotated(session: AsyncSession, token_id: str, when: datetime) -> None:
    await session.execute(
        update(RefreshToken).where(RefreshToken.id == token_id).values(rotated_at=when)
    )


async def revoke_family(session: AsyncSession, family_id: str, when: datetime, reason: str) -> None:
    await session.execute(
        update(RefreshFamily)
        .where(RefreshFamily.id == family_id, RefreshFamily.revoked_at.is_(None))
        .values(revoked_at=when, revoke_reason=reason)
    )
