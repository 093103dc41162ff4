"""The async engine and the one way services open a transaction."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import text
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from app.db.sales import SalePool
from app.db.unavailable import is_unavailable
from app.errors import ServiceUnavailable


class Database:
    """Owns the engine. Services call `begin()` for each short unit of work.

    Services open their own transactions (rather than one per request) because
    the order of commits across the two stores matters: PostgreSQL commits
    first, and only then is Redis told (a drop is mirrored, a purchase is
    committed), so Redis never points at a row that was rolled back.
    """

    def __init__(self, url: str, *, pool_size: int = 10, statement_timeout_ms: int = 5000) -> None:
        self.engine: AsyncEngine = create_async_engine(
            url,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_timeout=5,
            pool_pre_ping=True,
            connect_args={
                "timeout": 5,
                "command_timeout": statement_timeout_ms / 1000 + 1,
                "server_settings": {
                    "statement_timeout": str(statement_timeout_ms),
                    "idle_in_transaction_session_timeout": "30000",
                    "application_name": "sneakerdrop",
                },
            },
        )
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        # Sales run on their own pool of the same size (see app/db/sales.py).
        self.sales = SalePool(url, size=pool_size, statement_timeout_ms=statement_timeout_ms)

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncSession]:
        """A session inside one transaction: committed on success, rolled back on error.

        A lost connection or a timeout surfaces as `ServiceUnavailable` (503).
        """
        try:
            async with self.sessions() as session, session.begin():
                yield session
        except Exception as exc:
            if is_unavailable(exc):
                raise ServiceUnavailable("The database is not answering; try again") from exc
            raise

    async def ping(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    async def dispose(self) -> None:
        await self.sales.close()
        await self.engine.dispose()
