"""`record_sale`, the purchase's one PostgreSQL round trip, on a real PostgreSQL.

Idempotent when sent again; a second attempt finds the first's purchase; a voided
attempt sells nothing; a claim read before the drop was rebuilt sells nothing; a
connection lost with the statement in flight is answered by a second send, and when
that fails too the outcome is unknown and the claim is left for a retry.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import asyncpg
import pytest

from app.container import Container
from app.db import sales
from app.db.sales import SaleOutcome
from app.db.session import Database
from app.services.rebuild import rebuild_drop
from app.store import keys
from app.store.drops import RebuildMode, RebuildOutcome
from app.store.holds import ClaimOutcome, ClaimResult
from tests.integration.engine.helpers import AppFactory, purchase, users, wait_until
from tests.support.drop_lock import DROP_LOCK, waiting_on_lock
from tests.support.factories import admin_token, assert_invariant, create_drop
from tests.support.latency_proxy import LatencyProxy
from tests.support.purchase_races import claim_outcomes, purchase_rows
from tests.support.stores import StoreUrls, _plain


async def claimed(container: Container, drop_id: str) -> tuple[keys.HoldRef, ClaimResult]:
    """A new buyer's hold, claimed for purchase."""
    (buyer,) = await users(container, 1)
    hold = await container.hold_service.reserve(buyer.user.id, drop_id)
    ref = keys.parse_hold_id(hold.id)
    assert ref is not None
    claim = await container.hold_store.claim(ref, secrets.token_hex(8), 30_000)
    assert claim.outcome is ClaimOutcome.CLAIMED
    return ref, claim


async def record(
    db: Database, ref: keys.HoldRef, claim: ClaimResult, purchase_id: str, epoch: int | None = None
) -> sales.Sale:
    return await sales.record(
        db.sales,
        purchase_id=purchase_id,
        claim_id=claim.claim_id,
        hold_id=ref.hold_id,
        drop_id=ref.drop_id,
        user_id=ref.user_id,
        size=None,
        epoch=claim.epoch if epoch is None else epoch,
    )


async def test_sent_twice_it_answers_what_the_first_did(make_app: AppFactory) -> None:
    client, container = await make_app()
    drop = await create_drop(client, await admin_token(client, container), totalStock=3)
    ref, claim = await claimed(container, drop["id"])
    purchase_id = secrets.token_hex(16)

    first = await record(container.db, ref, claim, purchase_id)
    again = await record(container.db, ref, claim, purchase_id)
    other = await record(container.db, ref, claim, secrets.token_hex(16))

    assert first.outcome is again.outcome is SaleOutcome.CREATED
    assert other.outcome is SaleOutcome.FOUND
    assert first.purchase is not None
    assert first.purchase.id == purchase_id
    assert again.purchase is not None
    assert other.purchase is not None
    assert again.purchase.id == other.purchase.id == purchase_id
    assert again.purchase.purchased_at == other.purchase.purchased_at == first.purchase.purchased_at
    assert await purchase_rows(container, drop["id"]) == {ref.hold_id: purchase_id}
    assert await claim_outcomes(container, drop["id"]) == {ref.hold_id: {"recorded": 1}}


async def test_a_voided_attempt_sells_nothing(make_app: AppFactory) -> None:
    client, container = await make_app()
    drop = await create_drop(client, await admin_token(client, container), totalStock=3)
    ref, claim = await claimed(container, drop["id"])
    async with container.db.sales.transaction() as conn:
        assert await sales.void_or_find(conn, claim.claim_id, ref.hold_id) is None

    sale = await record(container.db, ref, claim, secrets.token_hex(16))

    assert (sale.outcome, sale.purchase) == (SaleOutcome.VOIDED, None)
    assert await purchase_rows(container, drop["id"]) == {}
    assert await claim_outcomes(container, drop["id"]) == {ref.hold_id: {"voided": 1}}


async def test_a_claim_read_before_a_rebuild_sells_nothing(make_app: AppFactory) -> None:
    client, container = await make_app()
    drop = await create_drop(client, await admin_token(client, container), totalStock=3)
    ref, claim = await claimed(container, drop["id"])
    # Redis loses the drop (the claim with it), and it is rebuilt from PostgreSQL.
    await container.redis.delete(*keys.DropKeys(drop["id"]).all_static())
    outcome = await rebuild_drop(container.db, container.drop_store, drop["id"], RebuildMode.INIT)
    assert outcome is RebuildOutcome.BUILT
    assert await container.drop_store.counters(drop["id"]) == (3, 3, 0, 0)

    stale = await record(container.db, ref, claim, secrets.token_hex(16))

    assert (stale.outcome, stale.purchase) == (SaleOutcome.STALE, None)
    assert await purchase_rows(container, drop["id"]) == {}
    assert await claim_outcomes(container, drop["id"]) == {}
    # The rebuilt drop sells under its new epoch.
    fresh, fresh_claim = await claimed(container, drop["id"])
    assert fresh_claim.epoch > claim.epoch
    sold = await record(container.db, fresh, fresh_claim, "p" * 32)
    assert sold.created
    assert sold.purchase is not None
    await container.hold_store.commit(fresh, "fresh", sold.purchase.purchased_at)
    await assert_invariant(container, drop["id"])


async def test_a_repair_that_did_nothing_keeps_the_epoch(make_app: AppFactory) -> None:
    client, container = await make_app()
    drop = await create_drop(client, await admin_token(client, container), totalStock=3)
    ref, claim = await claimed(container, drop["id"])
    # A purchase is in flight (PURCHASING): the repair defers, and the claim stays good.
    outcome = await rebuild_drop(container.db, container.drop_store, drop["id"], RebuildMode.REPAIR)
    assert outcome is RebuildOutcome.BUSY
    assert (await record(container.db, ref, claim, secrets.token_hex(16))).created


@pytest.fixture
async def locker(stores: StoreUrls) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(_plain(stores.database_url))
    yield conn
    await conn.close()


async def test_a_statement_whose_connection_died_is_sent_again(
    make_app: AppFactory, locker: asyncpg.Connection
) -> None:
    client, container = await make_app()
    drop = await create_drop(client, await admin_token(client, container), totalStock=3)
    ref, claim = await claimed(container, drop["id"])
    await locker.execute(DROP_LOCK, drop["id"])  # the sale waits inside its statement
    sale = asyncio.create_task(record(container.db, ref, claim, "a" * 32))
    await wait_until(lambda: waiting_on_lock(locker, 1), within=5, what="the sale in flight")
    ended = await locker.fetchval(
        "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
    )
    assert ended is True
    # Its connection ended with the statement in flight: it is sent again, and waits anew.
    await wait_until(lambda: waiting_on_lock(locker, 1), within=5, what="the second send")
    await locker.execute("SELECT pg_advisory_unlock_all()")

    answered = await sale
    assert answered.outcome is SaleOutcome.CREATED
    assert answered.purchase is not None
    assert answered.purchase.id == "a" * 32
    assert await purchase_rows(container, drop["id"]) == {ref.hold_id: "a" * 32}
    assert await claim_outcomes(container, drop["id"]) == {ref.hold_id: {"recorded": 1}}


async def test_no_answer_to_either_send_leaves_the_claim_for_a_retry(
    make_app: AppFactory, pg_proxy: LatencyProxy, locker: asyncpg.Connection
) -> None:
    client, container = await make_app(database_url=pg_proxy.url)
    drop = await create_drop(client, await admin_token(client, container), totalStock=3)
    (buyer,) = await users(container, 1)
    hold = await container.hold_service.reserve(buyer.user.id, drop["id"])
    await locker.execute(DROP_LOCK, drop["id"])
    buying = asyncio.create_task(purchase(client, hold.id, buyer.access_token))
    await wait_until(lambda: waiting_on_lock(locker, 1), within=5, what="the sale in flight")
    await pg_proxy.cut()  # connections reset, new ones refused: no second answer either

    refused = await buying
    assert refused.status_code == 503, refused.text
    assert refused.json()["code"] == "SERVICE_UNAVAILABLE"
    entry = await container.hold_store.entry(keys.parse_hold_id(hold.id))  # type: ignore[arg-type]
    assert entry is not None
    assert entry.startswith("PURCHASING|")

    # The first send's backend never saw its client go: once the lock is free it commits
    # on its own, unless the retry's statement records the attempt first. Either way one
    # purchase, and every answer after it is that purchase.
    await locker.execute("SELECT pg_advisory_unlock_all()")
    await pg_proxy.heal()
    retried = await purchase(client, hold.id, buyer.access_token)
    assert retried.status_code in (200, 201), retried.text
    again = await purchase(client, hold.id, buyer.access_token)
    assert (again.status_code, again.json()["id"]) == (200, retried.json()["id"])
    assert await purchase_rows(container, drop["id"]) == {hold.id: retried.json()["id"]}
    assert await claim_outcomes(container, drop["id"]) == {hold.id: {"recorded": 1}}
    await assert_invariant(container, drop["id"])
