"""Which database errors mean "PostgreSQL is not answering" (503), not a bug (500)."""

from __future__ import annotations

import asyncpg
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

# Errors that mean "PostgreSQL is not answering", as opposed to a bug or a
# constraint violation. They become 503, never 500.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    asyncpg.InterfaceError,  # asyncpg's own, on the sale path (app/db/sales.py)
    OSError,
    TimeoutError,
    PoolTimeout,  # no pooled connection came free within pool_timeout
)


# SQLSTATE classes of errors that mean "PostgreSQL cannot serve right now", whatever
# exception class the driver maps them to: connection exception (08), insufficient
# resources (53, e.g. too many connections), operator intervention (57: shutting down,
# starting up, "cannot connect now", a statement cancelled by its timeout). asyncpg's
# "the database system is shutting down" (57P03) reaches us as a bare DBAPIError.
UNAVAILABLE_SQLSTATE_CLASSES = ("08", "53", "57")


def is_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, UNAVAILABLE_ERRORS):
        return True
    if isinstance(exc, asyncpg.PostgresError):  # asyncpg's own, on the sale path
        code = getattr(exc, "sqlstate", None)
        return isinstance(code, str) and code[:2] in UNAVAILABLE_SQLSTATE_CLASSES
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return isinstance(sqlstate, str) and sqlstate[:2] in UNAVAILABLE_SQLSTATE_CLASSES
