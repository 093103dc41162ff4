"""Holds that Redis shows as live but PostgreSQL recorded as bought.

Redis restored from an older copy can hold such a hold as ACTIVE. PostgreSQL is the
record: the hold is committed in Redis (sold, buyer listed), never released. The
sweeper, the reconciler and a drop's cancellation all settle holds this way.
"""

from __future__ import annotations

from datetime import datetime

from app.batches import chunks
from app.db import purchases as purchase_rows
from app.db import users as user_rows
from app.db.session import Database
from app.store.holds import HoldStore
from app.store.keys import HoldRef

LOOKUP_BATCH = 5_000  # reservation ids per PostgreSQL look-up


async def commit_the_sold(
    db: Database, holds: HoldStore, refs: list[HoldRef]
) -> dict[str, datetime]:
    """Commit the holds among `refs` that PostgreSQL recorded as purchased.

    Returns their reservation ids with the purchase times. PostgreSQL is asked first and
    in full, so when it does not answer (ServiceUnavailable) nothing was committed.
    """
    if not refs:
        return {}
    sold: dict[str, datetime] = {}
    async with db.begin() as session:
        for batch in chunks([r.hold_id for r in refs], LOOKUP_BATCH):
            sold.update(await purchase_rows.purchased_among(session, batch))
        names = await user_rows.display_names(
            session, [r.user_id for r in refs if r.hold_id in sold]
        )
    for ref in refs:
        if ref.hold_id in sold:
            name = names.get(ref.user_id, "someone")
            await holds.commit(ref, name, sold[ref.hold_id])
    return sold
