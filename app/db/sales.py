"""The purchase's PostgreSQL step: one statement in one short transaction.

A sale is the hot write of a drop, so it skips the ORM and the pool's pre-ping (three
round trips on every checkout) and runs on its own asyncpg pool: BEGIN, one statement,
COMMIT. The statement does everything exactly-once needs:

- takes the drop's shared advisory lock, so a rebuild of the drop's Redis counters
  (`app.db.drops.lock_for_rebuild`, exclusive) counts all of an in-flight sale or none;
- records the purchase attempt (the claim id) in `purchase_claims`. The sweeper, when it
  gives up on a stale attempt, inserts the same key as `voided`: whichever insert comes
  first wins, and the other does nothing (PostgreSQL's unique index decides, and waits
  for the other's transaction to end first). So a voided attempt never sells, and a
  recorded one is never voided;
- inserts the purchase, unique per reservation (a second attempt of the same hold finds
  the first's row), at the drop's price as PostgreSQL has it.

When it inserts nothing, `explain` asks why, in a second statement (a rare path).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg
from asyncpg.transaction import Transaction
from sqlalchemy.engine import make_url

from app.db.models import Purchase
from app.db.unavailable import is_unavailable
from app.errors import ServiceUnavailable, Unauthorized

RECORD = """
WITH sale AS (
    SELECT pg_advisory_xact_lock_shared(hashtextextended('drop:' || $3::text, 0))
), attempt AS (
    INSERT INTO purchase_claims (claim_id, reservation_id, outcome)
    SELECT $5, $2, 'recorded' FROM sale
    ON CONFLICT (claim_id) DO NOTHING
    RETURNING claim_id
)
INSERT INTO purchases (id, reservation_id, drop_id, user_id, price_cents, currency, size)
SELECT $1, $2, d.id, $4, d.price_cents, d.currency, $6 FROM attempt, drops d WHERE d.id = $3
ON CONFLICT (reservation_id) DO NOTHING
RETURNING id, reservation_id, drop_id, user_id, price_cents, currency, purchased_at, size
"""

EXPLAIN = """
SELECT c.outcome, p.id, p.reservation_id, p.drop_id, p.user_id, p.price_cents, p.currency,
       p.purchased_at, p.size
FROM (SELECT 1) AS one
LEFT JOIN purchase_claims c ON c.claim_id = $1
LEFT JOIN purchases p ON p.reservation_id = $2
"""

SOLD = """
SELECT p.id, p.reservation_id, p.drop_id, p.user_id, p.price_cents, p.currency,
       p.purchased_at, p.size, u.display_name
FROM purchases p JOIN users u ON u.id = p.user_id
WHERE p.reservation_id = $1
"""

VOID = """
INSERT INTO purchase_claims (claim_id, reservation_id, outcome) VALUES ($1, $2, 'voided')
ON CONFLICT (claim_id) DO NOTHING
"""

USERS_FOREIGN_KEY = "fk_purchases_user_id_users"


@dataclass(frozen=True, slots=True)
class Sale:
    """What the sale statement did. `purchase` is None exactly when the attempt was voided."""

    purchase: Purchase | None
    created: bool


class SalePool:
    """A small asyncpg pool for sales and their settlement, apart from the ORM's pool."""

    def __init__(self, database_url: str, *, size: int, statement_timeout_ms: int) -> None:
        self.dsn = make_url(database_url).set(drivername="postgresql")
        self.size = size
        self.statement_timeout_ms = statement_timeout_ms
        self.pool: asyncpg.Pool | None = None

    async def _pool(self) -> asyncpg.Pool:
        if self.pool is None:
            self.pool = await asyncpg.create_pool(
                self.dsn.render_as_string(hide_password=False),
                min_size=0,
                max_size=self.size,
                timeout=5,
                command_timeout=self.statement_timeout_ms / 1000 + 1,
                server_settings={
                    "statement_timeout": str(self.statement_timeout_ms),
                    "idle_in_transaction_session_timeout": "30000",
                    "application_name": "sneakerdrop",
                },
                reset=_nothing_to_reset,
            )
        return self.pool

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """One transaction: committed when the block ends, rolled back if it raises.

        A lost connection or a timeout is `ServiceUnavailable` (503).
        """
        try:
            pool = await self._pool()
            conn, transaction = await _begun(pool)
            try:
                try:
                    yield conn
                except BaseException:
                    if not conn.is_closed():
                        await transaction.rollback()
                    raise
                await transaction.commit()
            finally:
                await pool.release(conn)
        except Exception as exc:
            if is_unavailable(exc):
                raise ServiceUnavailable("The database is not answering; try again") from exc
            raise

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection for single statements (each its own transaction), such as
        the lookups behind a 410 or a replayed purchase at a deadline storm.

        A lost connection or a timeout is `ServiceUnavailable` (503).
        """
        try:
            pool = await self._pool()
            async with pool.acquire(timeout=5) as conn:
                yield conn
        except Exception as exc:
            if is_unavailable(exc):
                raise ServiceUnavailable("The database is not answering; try again") from exc
            raise

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()
            self.pool = None


async def _begun(pool: asyncpg.Pool) -> tuple[asyncpg.Connection, Transaction]:
    """A pooled connection with its transaction started. A connection PostgreSQL dropped
    (it restarted) fails at BEGIN, before anything was sent: every pooled connection is
    then replaced and BEGIN is tried once more, on a fresh one."""
    try:
        return await _start(pool)
    except Exception as exc:
        if not is_unavailable(exc):
            raise
    await pool.expire_connections()
    return await _start(pool)


async def _start(pool: asyncpg.Pool) -> tuple[asyncpg.Connection, Transaction]:
    conn = await pool.acquire(timeout=5)
    transaction = conn.transaction()
    try:
        await transaction.start()
    except BaseException:
        await pool.release(conn)
        raise
    return conn, transaction


async def _nothing_to_reset(conn: asyncpg.Connection) -> None:
    """Sales leave no session state behind (their locks end with their transaction)."""


async def record(
    conn: asyncpg.Connection,
    *,
    purchase_id: str,
    claim_id: str,
    hold_id: str,
    drop_id: str,
    user_id: str,
    size: str | None = None,
) -> Sale:
    """Record attempt `claim_id`'s purchase of a hold, once (see the module's docstring).

    Unauthorized when the buyer's account no longer exists: nothing was written.
    """
    try:
        row = await conn.fetchrow(RECORD, purchase_id, hold_id, drop_id, user_id, claim_id, size)
    except asyncpg.ForeignKeyViolationError as exc:
        if exc.constraint_name == USERS_FOREIGN_KEY:
            raise Unauthorized("Account no longer exists") from None
        raise
    if row is not None:
        return Sale(_purchase(row, 0), created=True)
    found = await conn.fetchrow(EXPLAIN, claim_id, hold_id)
    assert found is not None  # one row, always
    if found["id"] is not None:
        return Sale(_purchase(found, 1), created=False)
    if found["outcome"] == "voided":
        return Sale(None, created=False)
    raise LookupError(f"drop {drop_id} of reservation {hold_id} is not in PostgreSQL")


async def void_or_find(
    conn: asyncpg.Connection, claim_id: str, hold_id: str
) -> tuple[Purchase, str] | None:
    """The sweeper's decision on a stale attempt: the hold's purchase (and its buyer's
    name) if one exists, else the attempt is voided for good (its late insert will do
    nothing)."""
    await conn.execute(VOID, claim_id, hold_id)
    return await sold(conn, hold_id)


async def sold(conn: asyncpg.Connection, hold_id: str) -> tuple[Purchase, str] | None:
    """The purchase of a reservation and its buyer's display name, if it was bought."""
    row = await conn.fetchrow(SOLD, hold_id)
    return None if row is None else (_purchase(row, 0), row["display_name"] or "someone")


def _purchase(row: asyncpg.Record, offset: int) -> Purchase:
    return Purchase(
        id=row[offset],
        reservation_id=row[offset + 1],
        drop_id=row[offset + 2],
        user_id=row[offset + 3],
        price_cents=row[offset + 4],
        currency=row[offset + 5],
        purchased_at=row[offset + 6],
        size=row[offset + 7],
    )
