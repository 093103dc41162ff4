"""Alembic environment, async (asyncpg). The URL comes from the caller.

`app.db.migrate.run_migrations` passes it in `config.attributes["database_url"]`;
plain `alembic upgrade head` reads `sqlalchemy.url` or DATABASE_URL.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from app.config import Settings
from app.db.models import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = config.attributes.get("database_url") or config.get_main_option("sqlalchemy.url")
    if not url:
        url = Settings().database_url
    if not url:
        raise RuntimeError("No database URL: set DATABASE_URL or use `sneakerdrop migrate`")
    return Settings(database_url=url).database_url or url


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def _do_run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = create_async_engine(_url())
    async with engine.connect() as connection:
        # Serialise concurrent migrators (several workers or hosts starting at once).
        await connection.exec_driver_sql("SELECT pg_advisory_lock(727274)")
        try:
            await connection.run_sync(_do_run)
            await connection.commit()
        finally:
            await connection.exec_driver_sql("SELECT pg_advisory_unlock(727274)")
    await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(_run_async())
