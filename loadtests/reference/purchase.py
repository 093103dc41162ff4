"""The bare purchase reference: what the original single-database backend did for a sale.

For `POST /api/reservations/{reservationId}/purchase` it verifies the bearer JWT
exactly as the product does (`access_user`, shared with the reserve reference) and
runs ONE PostgreSQL transaction: the hold row goes from ACTIVE to PURCHASED (only
the owner's, only while its `expires_at` is ahead) and the purchase row is inserted
(unique per reservation, price read from the product's `drops` row). It answers
201 with the product's `Purchase` body, or problem+json: 401, 404
`RESERVATION_NOT_FOUND`, 410 `RESERVATION_EXPIRED`, 409 `RESERVATION_CANCELLED`, and a
repeat of a bought hold answers 200 with the first purchase. Nothing else: no
framework, no Redis, no idempotency, no metrics. `loadtests/purchase_storm.py` runs
it beside the product: same PostgreSQL server and database, same worker count,
uvloop and httptools, a pool as large as the product's (`REF_DB_POOL_SIZE`).

Its holds live in PostgreSQL, in its own tables (`ref_holds`, `ref_purchases`,
beside the product's `users` and `drops`, which they reference): `create_tables`
makes them once the product has migrated the database, `seed_holds` fills `ref_holds`
in one statement.

    DATABASE_URL=postgresql://... JWT_ACCESS_SECRET=... REF_DB_POOL_SIZE=20 \\
    python -m uvicorn loadtests.reference.purchase:app --workers 2 --loop uvloop --http httptools
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from app.domain import iso
from loadtests.fixtures import asyncpg_dsn
from loadtests.reference.app import (
    PROBLEM_TYPE_BASE,
    BareApp,
    Scope,
    Send,
    respond,
)

PREFIX, SUFFIX = "/api/reservations/", "/purchase"
PROBLEM = b"application/problem+json"
PROBLEMS = {  # code -> (status, title), as the product's app/errors.py has them
    "UNAUTHORIZED": (401, "Authentication required"),
    "NOT_FOUND": (404, "Not found"),
    "RESERVATION_NOT_FOUND": (404, "Reservation not found"),
    "RESERVATION_CANCELLED": (409, "Reservation cancelled"),
    "RESERVATION_EXPIRED": (410, "Reservation expired"),
}
SCHEMA_LOCK = 0x5EF_7A61E  # serialises concurrent CREATE TABLE IF NOT EXISTS
SCHEMA = """
CREATE TABLE IF NOT EXISTS ref_holds (
    id text PRIMARY KEY,
    user_id text NOT NULL REFERENCES users (id),
    drop_id text NOT NULL REFERENCES drops (id),
    expires_at timestamptz NOT NULL,
    status text NOT NULL DEFAULT 'ACTIVE'
);
CREATE TABLE IF NOT EXISTS ref_purchases (
    id text PRIMARY KEY,
    reservation_id text NOT NULL UNIQUE REFERENCES ref_holds (id),
    drop_id text NOT NULL REFERENCES drops (id),
    user_id text NOT NULL REFERENCES users (id),
    price_cents bigint NOT NULL,
    currency text NOT NULL,
    purchased_at timestamptz NOT NULL DEFAULT now()
);
"""
TAKE_HOLD = (
    "UPDATE ref_holds SET status = 'PURCHASED' "
    "WHERE id = $1 AND user_id = $2 AND status = 'ACTIVE' AND expires_at > now() "
    "RETURNING drop_id"
)
INSERT_PURCHASE = (
    "INSERT INTO ref_purchases (id, reservation_id, drop_id, user_id, price_cents, currency) "
    "SELECT $1, $2, d.id, $3, d.price_cents, d.currency FROM drops d WHERE d.id = $4 "
    "RETURNING id, reservation_id, drop_id, price_cents, currency, purchased_at"
)
HOLD_STATE = "SELECT status, expires_at <= now() FROM ref_holds WHERE id = $1 AND user_id = $2"
PURCHASE_OF = (
    "SELECT id, reservation_id, drop_id, price_cents, currency, purchased_at "
    "FROM ref_purchases WHERE reservation_id = $1"
)


async def create_tables(connection: asyncpg.Connection) -> None:
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK)
        await connection.execute(SCHEMA)


async def seed_holds(
    connection: asyncpg.Connection,
    holds: Sequence[tuple[str, str, str]],
    ttl_seconds: int,
) -> None:
    """ACTIVE holds (id, user id, drop id) that expire `ttl_seconds` from now, in one INSERT."""
    await connection.execute(
        "INSERT INTO ref_holds (id, user_id, drop_id, expires_at) "
        "SELECT h.id, h.user_id, h.drop_id, now() + make_interval(secs => $4) "
        "FROM unnest($1::text[], $2::text[], $3::text[]) AS h(id, user_id, drop_id)",
        [h[0] for h in holds],
        [h[1] for h in holds],
        [h[2] for h in holds],
        float(ttl_seconds),
    )


def problem(code: str) -> tuple[int, bytes]:
    status, title = PROBLEMS[code]
    body = {
        "type": PROBLEM_TYPE_BASE + code.lower().replace("_", "-"),
        "title": title,
        "status": status,
        "detail": title,
        "code": code,
    }
    return status, orjson.dumps(body)


def purchase_body(row: asyncpg.Record) -> bytes:
    purchased_at: datetime = row["purchased_at"]
    return orjson.dumps(
        {
            "id": row["id"],
            "reservationId": row["reservation_id"],
            "dropId": row["drop_id"],
            "priceCents": row["price_cents"],
            "currency": row["currency"],
            "purchasedAt": iso(purchased_at),
        }
    )


class PurchaseReference(BareApp):
    """The ASGI callable; one per worker process, its pool made in the lifespan."""

    prefix, suffix = PREFIX, SUFFIX
    problem = staticmethod(problem)

    def __init__(self) -> None:
        super().__init__()
        self.pool: asyncpg.Pool | None = None

    async def startup(self) -> None:
        """Read the environment (at start-up, so importing this module needs none)."""
        self.secret = os.environ["JWT_ACCESS_SECRET"]
        size = int(os.environ.get("REF_DB_POOL_SIZE", "20"))
        self.pool = await asyncpg.create_pool(
            asyncpg_dsn(os.environ["DATABASE_URL"]), min_size=1, max_size=size
        )

    async def shutdown(self) -> None:
        if self.pool is not None:
            await self.pool.close()

    async def purchase(self, reservation_id: str, scope: Scope, send: Send) -> None:
        caller = await self.caller(scope, send)
        if caller is None:
            return
        user_id = caller[0]
        assert self.pool is not None
        async with self.pool.acquire() as connection, connection.transaction():
            drop_id = await connection.fetchval(TAKE_HOLD, reservation_id, user_id)
            if drop_id is not None:
                row = await connection.fetchrow(
                    INSERT_PURCHASE, secrets.token_hex(16), reservation_id, user_id, drop_id
                )
                status, body = 201, purchase_body(row)
            else:
                status, body = await self.refusal(connection, reservation_id, user_id)
        media = b"application/json" if status < 300 else PROBLEM
        await respond(send, status, body, media)

    handle = purchase  # the route's handler, called by BareApp.__call__

    @staticmethod
    async def refusal(
        connection: asyncpg.Connection, reservation_id: str, user_id: str
    ) -> tuple[int, bytes]:
        """Why the hold could not be taken (off the measured path: each hold is bought once)."""
        state: Any = await connection.fetchrow(HOLD_STATE, reservation_id, user_id)
        if state is None:
            return problem("RESERVATION_NOT_FOUND")
        if state[0] == "PURCHASED":
            return 200, purchase_body(await connection.fetchrow(PURCHASE_OF, reservation_id))
        if state[0] == "ACTIVE" and state[1]:
            return problem("RESERVATION_EXPIRED")
        return problem("RESERVATION_CANCELLED")


app = PurchaseReference()
