"""Shared by the purchase race tests (tests/faults/test_purchase_*.py): a purchase fired
at a chosen moment, and the facts each one is judged by, read from both stores."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import httpx
from sqlalchemy import text

from app.container import Container
from app.services.auth import Session
from app.store import keys
from app.store.client import UPTIME_GRAIN_MS, redis_now_ms, server_started_ms
from tests.integration.engine.helpers import live_holds, purchase, wait_until


async def past_reload_window(container: Container) -> None:
    """Wait until no hold made from now on can count as reloaded from disk.

    The service dates Redis's start from INFO's whole-second uptime, rounded late
    (`app.store.client.server_start`): each reading falls between one and two seconds
    after the true start, and the next reading may be a second later than this one. A
    hold made before the latest possible reading counts as reloaded: a cancel and a late
    purchase ask PostgreSQL first, and the expiry listener leaves it to the sweeper.
    Those are other paths than the ones these tests race.
    """

    async def clear() -> bool:
        started = await server_started_ms(container.redis)
        return await redis_now_ms(container.redis) > started + UPTIME_GRAIN_MS

    await wait_until(clear, within=5, what="Redis's reload window to pass")


async def purchase_rows(container: Container, drop_id: str) -> dict[str, str]:
    """Reservation id -> purchase id, as PostgreSQL has them."""
    async with container.db.sales.transaction() as conn:
        rows = await conn.fetch(
            "SELECT reservation_id, id FROM purchases WHERE drop_id = $1", drop_id
        )
    return {str(row["reservation_id"]): str(row["id"]) for row in rows}


async def claim_outcomes(container: Container, drop_id: str) -> dict[str, dict[str, int]]:
    """Per reservation of the drop: its purchase attempts in PostgreSQL, by outcome."""
    async with container.db.sales.transaction() as conn:
        rows = await conn.fetch(
            "SELECT reservation_id, outcome, count(*) AS n FROM purchase_claims "
            "WHERE reservation_id LIKE $1 GROUP BY reservation_id, outcome",
            f"{drop_id}.%",
        )
    found: dict[str, dict[str, int]] = {}
    for row in rows:
        found.setdefault(str(row["reservation_id"]), {})[str(row["outcome"])] = int(row["n"])
    return found


async def closings(container: Container, drop_id: str) -> dict[str, tuple[str, int]]:
    """Ended holds -> (EXPIRED / CANCELLED / PURCHASED, ms from its deadline to its end)."""
    closed = await container.redis.hgetall(keys.DropKeys(drop_id).closed)
    found = {}
    for rid, entry in closed.items():
        state, _, expires, _, closed_ms = str(entry).split("|")
        found[str(rid)] = (state, int(closed_ms) - int(expires))
    return found


async def closed_states(container: Container, drop_id: str) -> dict[str, str]:
    """Ended holds -> EXPIRED / CANCELLED / PURCHASED."""
    return {rid: state for rid, (state, _) in (await closings(container, drop_id)).items()}


async def all_ended(container: Container, drop_id: str, within: float) -> None:
    """Wait until the drop has no live hold left."""

    async def none_live() -> bool:
        return await live_holds(container, drop_id) == 0

    await wait_until(none_live, within=within, what="every hold of the drop to end")


async def warm_pools(container: Container, size: int) -> None:
    """Open `size` connections in each PostgreSQL pool (the ORM's, the sales') now, as a
    service under load has them open: through a slow link each set-up is a dozen round
    trips, which the first trials would otherwise queue behind."""
    everyone = asyncio.Barrier(2 * size)

    async def orm() -> None:
        async with container.db.begin() as session:
            await session.execute(text("SELECT 1"))
            await everyone.wait()

    async def sale() -> None:
        async with container.db.sales.transaction() as conn:
            await conn.fetchval("SELECT 1")
            await everyone.wait()

    await asyncio.gather(*(orm() for _ in range(size)), *(sale() for _ in range(size)))


@dataclass
class Trial:
    """One purchase fired at a chosen moment, and its answer."""

    hold_id: str
    fired_ms: float  # when the purchase left, from the hold's deadline
    status: int
    code: str | None
    purchase_id: str | None


async def fire(
    client: httpx.AsyncClient, buyer: Session, hold_id: str, fire_at_ms: float, deadline: int
) -> Trial:
    """The purchase, sent at `fire_at_ms` (wall clock, the clock Redis's TIME reads)."""
    await asyncio.sleep(max(0.0, fire_at_ms / 1000 - time.time()))  # the trial's schedule
    fired = time.time() * 1000 - deadline
    bought = await purchase(client, hold_id, buyer.access_token)
    body = bought.json()
    return Trial(
        hold_id=hold_id,
        fired_ms=fired,
        status=bought.status_code,
        code=body.get("code") if bought.status_code >= 400 else None,
        purchase_id=body.get("id") if bought.status_code < 300 else None,
    )


def judge(trials: list[Trial], rows: dict[str, str], ended: dict[str, str]) -> None:
    """Each trial ended one way, and the stores agree on which."""
    for t in trials:
        if t.status in (200, 201):
            assert rows.get(t.hold_id) == t.purchase_id, (t, rows.get(t.hold_id))
            assert ended[t.hold_id] == "PURCHASED", (t, ended.get(t.hold_id))
        else:
            assert (t.status, t.code) == (410, "RESERVATION_EXPIRED"), t
            assert t.hold_id not in rows, f"410 answered, yet a purchase row exists: {t}"
            assert ended[t.hold_id] == "EXPIRED", (t, ended.get(t.hold_id))
    # Never sold and back in stock at once: every row's hold is PURCHASED, no other.
    assert not [rid for rid in rows if ended.get(rid) != "PURCHASED"]
    assert set(rows) <= {t.hold_id for t in trials}
