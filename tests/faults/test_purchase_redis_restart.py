"""Redis killed with holds live, restarted empty: no unit is sold twice.

Holds are live when Redis is SIGKILLed (the test owns the server) and restarted empty on
its port. Purchases are caught after their claim by the failpoint hook, and let go at two
moments:
- while Redis is down: PostgreSQL records the sale (the drop was not rebuilt since the
  claim), the commit in Redis fails, and the buyer gets 503; the rebuild then counts the
  sale, and the buyer's next try answers it (200);
- after the drop's counters were rebuilt from PostgreSQL, which counts the lost holds'
  units as available again: PostgreSQL refuses each sale (its claim read an older rebuild
  epoch), so nothing is written and the buyer gets 503.
During the outage every request answers 503 within a second; after the restart a
purchase of each lost hold that was not sold answers 404 or 410, never a sale.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from app.container import Container
from app.services.auth import Session
from tests.integration.engine.helpers import AppFactory, purchase, reserve, users, wait_until
from tests.support.factories import admin_token, assert_invariant, auth, create_drop
from tests.support.faults import assert_unavailable, sneakerdrop_check
from tests.support.owned_stores import OwnedValkey
from tests.support.purchase_races import claim_outcomes, past_reload_window, purchase_rows
from tests.support.stores import StoreUrls

TOTAL = 100
BOUGHT = 10  # bought before the crash: PostgreSQL keeps them
PER_GROUP = 10  # purchases caught at a step, per group
IDLE = 40  # holds nobody is buying when Redis dies
OUTAGE_ANSWER_SECONDS = 1.0


@dataclass
class Group:
    """Purchases stopped at `point` until `go` is set."""

    point: str
    go: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: int = 0
    let_go_at: float = 0.0


GROUP: ContextVar[Group | None] = ContextVar("group", default=None)


def group_hook() -> Callable[[str], Awaitable[None]]:
    async def hook(point: str) -> None:
        group = GROUP.get()
        if group is None or point != group.point:
            return
        GROUP.set(None)  # once per purchase
        group.arrived += 1
        await group.go.wait()

    return hook


async def caught_purchase(
    client: httpx.AsyncClient, group: Group, hold_id: str, buyer: Session
) -> tuple[httpx.Response, float]:
    """A purchase stopped at its group's point; returns its answer and how long it took
    after the group was let go."""
    GROUP.set(group)  # seen by the hook inside this request
    response = await purchase(client, hold_id, buyer.access_token)
    return response, time.monotonic() - group.let_go_at


def release(group: Group) -> None:
    group.let_go_at = time.monotonic()
    group.go.set()


async def timed(request: Awaitable[httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    async with asyncio.timeout(5 * OUTAGE_ANSWER_SECONDS):
        response = await request
    return response, time.monotonic() - started


async def mirrored(container: Container, drop_id: str) -> bool:
    return await container.drop_store.counters(drop_id) is not None


async def test_purchases_of_holds_lost_with_redis_are_never_sold(
    make_app: AppFactory, owned_redis: OwnedValkey, stores: StoreUrls, tmp_path: Path
) -> None:
    client, container = await make_app(reconcile_interval_seconds=1)
    admin = await admin_token(client, container)
    drop = await create_drop(client, admin, totalStock=TOTAL)
    crowd = await users(container, BOUGHT + 2 * PER_GROUP + IDLE + 5)
    await past_reload_window(container)
    holds: list[tuple[str, Session]] = []
    for buyer in crowd[: BOUGHT + 2 * PER_GROUP + IDLE]:
        hold = await container.hold_service.reserve(buyer.user.id, drop["id"])
        holds.append((hold.id, buyer))
    bought, in_flight, idle = (
        holds[:BOUGHT],
        holds[BOUGHT : BOUGHT + 2 * PER_GROUP],
        holds[BOUGHT + 2 * PER_GROUP :],
    )
    sold_before = {}
    for hold_id, buyer in bought:
        response = await purchase(client, hold_id, buyer.access_token)
        assert response.status_code == 201, response.text
        sold_before[hold_id] = response.json()["id"]

    # Two groups of purchases, each stopped after its claim.
    in_outage = Group("after_claim")  # let go while Redis is down
    after_rebuild = Group("after_claim")  # let go once the drop was rebuilt
    groups = [in_outage, after_rebuild]
    container.hold_service.fault_hook = group_hook()
    caught = {
        id(group): [
            asyncio.create_task(caught_purchase(client, group, hold_id, buyer))
            for hold_id, buyer in in_flight[i * PER_GROUP : (i + 1) * PER_GROUP]
        ]
        for i, group in enumerate(groups)
    }

    async def all_caught() -> bool:
        return all(group.arrived == PER_GROUP for group in groups)

    await wait_until(all_caught, within=5, what="every purchase at its step")

    owned_redis.kill()  # SIGKILL, holds live, purchases in flight
    # During the outage: one of every kind of request, and the purchases of every idle
    # hold, all at once; and the first group is let go.
    prober, probe_hold = idle[0][1], idle[0][0]
    headers = auth(prober.access_token)
    requests = [
        *(purchase(client, hold_id, buyer.access_token) for hold_id, buyer in idle),
        *(reserve(client, drop["id"], buyer.access_token) for buyer in crowd[-5:]),
        client.delete(f"/api/reservations/{probe_hold}", headers=headers),
        client.get(f"/api/drops/{drop['id']}"),
        client.get("/api/drops"),
        client.get("/api/me/reservations", headers=headers),
    ]
    release(in_outage)
    during = await asyncio.gather(*(timed(request) for request in requests))
    during += await asyncio.gather(*caught[id(in_outage)])
    for response, seconds in during:
        assert_unavailable(response)
        assert seconds < OUTAGE_ANSWER_SECONDS, (response.request.url, seconds)
    slowest = max(seconds for _, seconds in during)
    # PostgreSQL recorded the first group's sales: the drop was not rebuilt since their claims.
    sold_in_outage = {
        hold_id: purchase_id
        for hold_id, purchase_id in (await purchase_rows(container, drop["id"])).items()
        if hold_id not in sold_before
    }
    assert set(sold_in_outage) == {h for h, _ in in_flight[:PER_GROUP]}, sold_in_outage
    sold = BOUGHT + PER_GROUP

    await asyncio.to_thread(owned_redis.restart, empty=True)
    # The reconciler notices the drop missing and rebuilds it from PostgreSQL: every
    # unit not sold there is available again, the lost holds' units among them.
    await wait_until(lambda: mirrored(container, drop["id"]), within=10, what="drop rebuilt")
    assert await container.drop_store.counters(drop["id"]) == (TOTAL, TOTAL - sold, sold, 0)
    release(after_rebuild)  # a sale now would sell a unit the rebuild made available
    rebuilt = await asyncio.gather(*caught[id(after_rebuild)])
    container.hold_service.fault_hook = None
    for response, _ in rebuilt:
        assert_unavailable(response)

    # Every lost hold: a purchase is answered 404 or 410, never with a sale; the ones sold
    # during the outage answer their sale.
    unsold = in_flight[PER_GROUP:] + idle
    again = await asyncio.gather(
        *(purchase(client, hold_id, buyer.access_token) for hold_id, buyer in unsold)
    )
    answers = Counter((r.status_code, r.json().get("code")) for r in again)
    assert set(answers) <= {(404, "RESERVATION_NOT_FOUND"), (410, "RESERVATION_EXPIRED")}, answers
    # PostgreSQL has the purchases made before the crash and during the outage, and
    # nothing else: no row, and no recorded attempt, for a hold refused after the rebuild.
    assert await purchase_rows(container, drop["id"]) == {**sold_before, **sold_in_outage}
    attempts = await claim_outcomes(container, drop["id"])
    assert set(attempts) == set(sold_before) | set(sold_in_outage), attempts
    for hold_id, buyer in bought + in_flight[:PER_GROUP]:  # each is still its buyer's
        response = await purchase(client, hold_id, buyer.access_token)
        assert response.status_code == 200, response.text
        assert response.json()["id"] == {**sold_before, **sold_in_outage}[hold_id]
    assert await container.drop_store.counters(drop["id"]) == (TOTAL, TOTAL - sold, sold, 0)
    print(
        f"\nRedis restarted empty: {len(during)} requests during the outage, all 503, "
        f"slowest {slowest * 1000:.0f} ms; {len(unsold)} unsold lost holds' purchases: {dict(answers)}"
    )

    # The rebuilt drop sells what it has: a lost hold's owner reserves and buys again.
    hold_id, buyer = idle[1]
    held = await reserve(client, drop["id"], buyer.access_token)
    assert held.status_code == 201, held.text
    bought_again = await purchase(client, held.json()["id"], buyer.access_token)
    assert bought_again.status_code == 201, bought_again.text
    await assert_invariant(container, drop["id"])
    await sneakerdrop_check(stores, tmp_path / "data")
