"""The purchase's PostgreSQL step: one statement, in its own transaction, one round trip.

A sale is the hot write of a drop, so it skips the ORM and the pool's pre-ping (three
round trips on every checkout) and runs on its own asyncpg pool. The statement calls
`record_sale` (migrations/versions/2026_12_07_0006_record_sale.py), which does everything
exactly-once needs:

- takes the drop's shared advisory lock, so a rebuild of the drop's Redis counters
  (`app.db.drops.lock_for_rebuild`, exclusive) counts all of an in-flight sale or none;
- then, in a snapshot taken after the lock, refuses the sale (`stale`) when the drop was
  rebuilt since the claim read its epoch: the rebuild may have counted the claimed unit
  as available again;
- records the purchase attempt (the claim id) in `purchase_claims`. The sweeper, when it
  gives up on a stale attempt, inserts the same key as `voided`: whichever insert comes
  first wins, and the other does nothing (PostgreSQL's unique index decides, and waits
  for the other's transaction to end first). So a voided attempt never sells, and a
  recorded one is never voided;
- inserts the purchase, unique per reservation (a second attempt of the same hold finds
  the first's row), at the drop's price as PostgreSQL has it.

The statement is idempotent: sent again with the same ids it answers what the first
send did. So when a connection is lost with the statement in flight (it may have
committed), it is sent once more on a fresh connection, and only if that fails too is
the outcome unknown (`OutcomeUnknown`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import Enum

import asyncpg
from asyncpg.transaction import Transaction
from sqlalchemy.engine import make_url

from app.db.models import Purchase
from app.db.unavailable import is_unavailable
from app.errors import ServiceUnavailable, Unauthorized

RECORD = "SELECT * FROM record_sale($1, $2, $3, $4, $5, $6, $7)"

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


UNAVAILABLE = "The database is not answering; try again"


class OutcomeUnknown(ServiceUnavailable):
    """The sale statement was sent and no answer came back, even to a second send: it may
    have committed. The claim stays; a retry continues it, or the sweeper settles it."""


class _Lost(Exception):
    """The connection failed with the statement in flight."""


class SaleOutcome(Enum):
    CREATED = "created"  # this attempt inserted the purchase
    FOUND = "found"  # the hold's purchase was already recorded
    VOIDED = "voided"  # the sweeper fenced this attempt first: nothing sold
    STALE = "stale"  # the drop was rebuilt since the claim: nothing sold


@dataclass(frozen=True, slots=True)
class Sale:
    """What the sale statement did. `purchase` is None exactly when nothing was sold."""

    outcome: SaleOutcome
    purchase: Purchase | None = None

    @property
    def created(self) -> bool:
        return self.outcome is SaleOutcome.CREATED


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
                raise ServiceUnavailable(UNAVAILABLE) from exc
            raise

    async def fetchrow_idempotent(
        self, query: str, *args: object, sent: Callable[[], Awaitable[None]] | None = None
    ) -> asyncpg.Record | None:
        """Run an idempotent statement in its own transaction (see the module's docstring).

        ServiceUnavailable: refused before it ran (no connection, PostgreSQL refused it, or
        answered an error and rolled back). OutcomeUnknown: sent twice, answered neither
        time. `sent`, a test hook, is awaited with the first send on its way.
        """
        try:
            return await self._fetchrow(query, args, sent)
        except _Lost:
            pass
        try:
            await (await self._pool()).expire_connections()
            return await self._fetchrow(query, args, None)
        except (_Lost, ServiceUnavailable) as exc:
            raise OutcomeUnknown("The purchase may not have been recorded; try again") from exc

    async def _fetchrow(
        self, query: str, args: tuple[object, ...], sent: Callable[[], Awaitable[None]] | None
    ) -> asyncpg.Record | None:
        """One send. Without a connection (nothing sent): ServiceUnavailable, from
        `connection`. The connection lost with the statement in flight: _Lost."""
        async with self.connection() as conn:
            try:
                if sent is None:
                    return await conn.fetchrow(query, *args)
                prepared = await conn.prepare(query)  # so that what is sent next runs it
                return await _with_hook(prepared.fetchrow(*args), sent)
            except asyncpg.PostgresError as exc:
                if _session_ended(exc):  # maybe after its commit
                    raise _Lost() from exc
                if is_unavailable(exc):  # e.g. its statement timeout: rolled back
                    raise ServiceUnavailable(UNAVAILABLE) from exc
                raise
            except Exception as exc:
                if is_unavailable(exc):
                    raise _Lost() from exc
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
                raise ServiceUnavailable(UNAVAILABLE) from exc
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


# SQLSTATEs of errors that end the session (FATAL): connection exceptions (08, which
# asyncpg also uses for a connection closed under a statement) and the server going away.
SESSION_ENDED = ("08", "57P01", "57P02", "57P03", "57P04", "57P05")


def _session_ended(exc: asyncpg.PostgresError) -> bool:
    """An error that ended the session, as opposed to one that rolled back the statement's
    transaction and left the session usable (nothing was written)."""
    code = getattr(exc, "sqlstate", None)
    return isinstance(code, str) and code.startswith(SESSION_ENDED)


async def _with_hook(
    statement: Awaitable[asyncpg.Record | None], sent: Callable[[], Awaitable[None]]
) -> asyncpg.Record | None:
    """The statement's answer, with `sent` awaited while it is on its way (a failpoint)."""
    pending = asyncio.ensure_future(statement)
    # One turn of the loop: the task runs until it waits for the answer, the prepared
    # statement's Bind and Execute written to the socket.
    await asyncio.sleep(0)
    try:
        await sent()
    except BaseException:
        await asyncio.gather(pending, return_exceptions=True)  # a crash: it still ran
        raise
    return await pending


async def record(
    pool: SalePool,
    *,
    purchase_id: str,
    claim_id: str,
    hold_id: str,
    drop_id: str,
    user_id: str,
    size: str | None,
    epoch: int,
    sent: Callable[[], Awaitable[None]] | None = None,
) -> Sale:
    """Record attempt `claim_id`'s purchase of a hold, once (see the module's docstring).
    `epoch`: the drop's rebuild epoch as the claim read it from Redis.

    Unauthorized when the buyer's account no longer exists: nothing was written.
    """
    try:
        row = await pool.fetchrow_idempotent(
            RECORD, purchase_id, hold_id, drop_id, user_id, claim_id, size, epoch, sent=sent
        )
    except asyncpg.ForeignKeyViolationError as exc:
        if exc.constraint_name == USERS_FOREIGN_KEY:
            raise Unauthorized("Account no longer exists") from None
        raise
    if row is None:
        raise LookupError(f"drop {drop_id} of reservation {hold_id} is not in PostgreSQL")
    outcome = SaleOutcome(row[0])  # a ValueError on 'missing': a recorded claim, no row
    if outcome in (SaleOutcome.CREATED, SaleOutcome.FOUND):
        return Sale(outcome, _purchase(row, 1))
    return Sale(outcome)


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
