"""User rows."""

from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import User


async def by_email(session: AsyncSession, email: str) -> User | None:
    result = await session.execute(select(User).where(func.lower(User.email) == email.lower()))
    return result.scalar_one_or_none()


async def by_id(session: AsyncSession, user_id: str) -> User | None:
    return await session.get(User, user_id)


async def insert_user(
    session: AsyncSession,
    *,
    user_id: str,
    email: str,
    password_hash: str,
    display_name: str,
    role: str = "customer",
) -> User | None:
    """Insert a user; None when the email is taken (any case)."""
    stmt = (
        insert(User)
        .values(
            id=user_id,
            email=email,
            password_hash=password_hash,
            display_name=display_name,
            role=role,
        )
        .on_conflict_do_nothing()
        .returning(User)
    )
    result = await session.execute(stmt)
    return result.scalar_one_or_none()


async def set_admin(session: AsyncSession, user_id: str, password_hash: str) -> None:
    await session.execute(
        update(User).where(User.id == user_id).values(role="admin", password_hash=password_hash)
    )


async def display_names(session: AsyncSession, user_ids: list[str]) -> dict[str, str]:
    if not user_ids:
        return {}
    rows = await session.execute(select(User.id, User.display_name).where(User.id.in_(user_ids)))
    return {user_id: name for user_id, name in rows.all()}
