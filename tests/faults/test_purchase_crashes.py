"""Crash windows of the two-store purchase: a worker process SIGKILLed at each failpoint.

A purchase claims its hold in Redis, records the sale in one PostgreSQL statement (its own
transaction), then commits in Redis; the failpoints sit between those steps
(`after_claim`; `statement_sent`, the statement on its way and its answer not read;
`after_record`). For each failpoint, 100 worker processes of
the real app (tests/support/failpoint_server.py: `create_app()` under uvicorn, real
stores) each get IN_FLIGHT purchases over HTTP at once and SIGKILL themselves when the
k-th of them reaches the failpoint (k = 1..IN_FLIGHT in turn), so the others die
wherever they are: before their claim, inside PostgreSQL, answered already. One buyer
of each worker sends an Idempotency-Key. A few workers run side by side, each on its
own holds.

The buyers then come back through this test's own app (same stores), in two ways:
- at once (the workers' claim timeout is 30 s, so nothing settles meanwhile): the retry
  continues the dead attempt;
- after the sweeper (the workers' claim timeout is 2 s): the buyer waits until the
  sweeper has settled the stale claim, PURCHASED if PostgreSQL has the row, else ACTIVE
  again with the hold's own deadline, never released.

Every retry answers 200 with the id of the row the dead worker wrote, or 201 (within the
hold's lifetime) where none was written; a request the worker answered before it died
is answered with the same purchase (a replay of that 201 under its key); the purchase at
the failpoint answers 201 after `after_claim`, 200 after `after_record`, and after
`statement_sent` 200 if the dead worker's statement committed (PostgreSQL runs it to
the end without its client), else 201. In the end each hold has exactly one purchase row, no unit went back to
stock, and the invariant and `sneakerdrop check` hold.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.container import Container
from app.db.models import Purchase
from app.services.auth import Session
from app.store import keys
from app.store.entries import parse_entry
from tests.conftest import AppFactory
from tests.integration.engine.helpers import users
from tests.support.factories import admin_token, assert_invariant, auth, create_drop
from tests.support.failpoint_server import FAILPOINTS, FailpointServer, failpoint_server
from tests.support.faults import sneakerdrop_check
from tests.support.serve import serve_env
from tests.support.stores import StoreUrls

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]  # ~25-40 s on 2 cores

# Per failpoint: half of them retried at once, half after the sweeper; each half kills
# at every k = 1..IN_FLIGHT 16 or 17 times (docs/RELIABILITY.md).
KILLS = 100
IN_FLIGHT = 3  # purchases a worker runs when it is killed
# Workers killed side by side on each path, each on its own holds: one's start-up (its
# lifespan: pools, scripts, the drops mirrored) overlaps the others' purchases and the
# checks after a kill. Three keep both cores busy; more only wait for them.
LANES = 3
HOLD_SECONDS = 120
BUYERS = 20  # each holds KILLS * IN_FLIGHT / BUYERS units of the drop
SHORT_CLAIM_SECONDS = 2  # path B's workers' claim timeout (the least allowed)
RETRY_WITHIN = 10.0  # seconds a retry may take (a margin over the 3 s lease, for a busy box)
# The sweeper settles a claim 2 s old within a pass (100 ms); the margin is for a busy box.
SETTLE_SECONDS = 30.0


@dataclass
class Buy:
    hold_id: str
    token: str
    expires_at: datetime
    key: str | None  # Idempotency-Key, for one buyer of each wave
    answer: httpx.Response | None = None  # the worker's, when it answered before dying
    victim: bool = False  # the purchase that was at the failpoint
    written: str | None = None  # the victim's purchase id, when the dead worker recorded it
    retried: dict[str, Any] = field(default_factory=dict)

    @property
    def headers(self) -> dict[str, str]:
        extra = {} if self.key is None else {"Idempotency-Key": self.key}
        return {**auth(self.token), **extra}

    @property
    def path(self) -> str:
        return f"/api/reservations/{self.hold_id}/purchase"


async def states(container: Container, hold_ids: list[str]) -> dict[str, tuple[str, int] | None]:
    """(state, expiresAt ms) of each hold, live or ended (None: Redis does not know it),
    in two round trips."""
    ref = keys.parse_hold_id(hold_ids[0])
    assert ref is not None
    drop_keys = keys.DropKeys(ref.drop_id)
    live = await container.redis.hmget(drop_keys.holds, hold_ids)  # type: ignore[misc]
    ended = await container.redis.hmget(drop_keys.closed, hold_ids)  # type: ignore[misc]
    found: dict[str, tuple[str, int] | None] = {}
    for hold_id, held, closed in zip(hold_ids, live, ended, strict=True):
        raw = held if held is not None else closed
        entry = None if raw is None else parse_entry(str(raw))
        found[hold_id] = None if entry is None else (entry.state, entry.expires_at_ms)
    return found


async def claim_facts(container: Container, hold_ids: list[str]) -> dict[str, Any]:
    """What the sweeper goes by, for a failure's message."""
    ref = keys.parse_hold_id(hold_ids[0])
    assert ref is not None
    drop_keys = keys.DropKeys(ref.drop_id)
    return {
        "entries": await container.redis.hmget(drop_keys.holds, hold_ids),  # type: ignore[misc]
        "due": [await container.redis.zscore(drop_keys.due, h) for h in hold_ids],
        "now_ms": await container.hold_store.now_ms(),
        "sweeper": await container.redis.get(keys.SWEEPER_LEASE),
        "rows": await rows_of(container, hold_ids),
    }


async def rows_of(container: Container, hold_ids: list[str]) -> dict[str, list[str]]:
    """Purchase ids per reservation, as PostgreSQL has them."""
    async with container.db.begin() as session:
        found = await session.execute(
            select(Purchase.reservation_id, Purchase.id).where(
                Purchase.reservation_id.in_(hold_ids)
            )
        )
    rows: dict[str, list[str]] = {hold_id: [] for hold_id in hold_ids}
    for reservation_id, purchase_id in found.all():
        rows[reservation_id].append(purchase_id)
    return rows


async def try_buy(http: httpx.AsyncClient, url: str, buy: Buy) -> None:
    try:
        response = await http.post(url + buy.path, headers=buy.headers)
    except httpx.TransportError:
        return  # the worker died with it
    assert response.status_code == 201, response.text  # a worker alive answers the buy
    buy.answer = response


async def settled(container: Container, wave: list[Buy]) -> None:
    """Wait until the sweeper has settled the stale claims the dead worker left in `wave`
    (of the purchases it did not answer), and check what it made of each."""
    waiting = [buy.hold_id for buy in wave if buy.answer is None]
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        found = await states(container, waiting)
        if all(entry is not None and entry[0] != "PURCHASING" for entry in found.values()):
            break
        if time.monotonic() > deadline:
            facts = await claim_facts(container, waiting)
            raise AssertionError(f"still PURCHASING after {SETTLE_SECONDS}s: {facts}")
        await asyncio.sleep(0.2)
    rows = await rows_of(container, waiting)
    for buy in wave:
        if buy.answer is not None:
            continue
        entry = found[buy.hold_id]
        assert entry is not None
        state, expires_ms = entry
        buy.retried["state"] = state
        if rows[buy.hold_id]:
            assert state == "PURCHASED", (buy.hold_id, state, rows[buy.hold_id])
        else:
            # Voided: ACTIVE again until its own deadline, its unit still held.
            assert state == "ACTIVE", (buy.hold_id, state)
            assert expires_ms == int(buy.expires_at.timestamp() * 1000), buy.hold_id


async def retry(client: httpx.AsyncClient, buy: Buy, failpoint: str) -> None:
    """The buyer comes back, with the same Idempotency-Key if it sent one."""
    try:
        # A repeat of a dead request's key waits out that request's lease (3 s), no longer.
        async with asyncio.timeout(RETRY_WITHIN):
            response = await client.post(buy.path, headers=buy.headers)
    except TimeoutError:
        raise AssertionError(
            f"{buy.hold_id} (key {buy.key}): no answer in {RETRY_WITHIN}s"
        ) from None
    buy.retried["at"] = datetime.now(UTC)
    buy.retried["failpoint"] = failpoint
    assert response.status_code in (200, 201), (buy.hold_id, response.text)
    buy.retried["status"] = response.status_code
    buy.retried["id"] = response.json()["id"]
    if buy.answer is not None:  # answered before the kill: the same purchase again
        assert response.json()["id"] == buy.answer.json()["id"], buy.hold_id
        replayed = response.headers.get("idempotent-replayed") == "true"
        assert (response.status_code, replayed) == ((201, True) if buy.key else (200, False))
    if buy.victim:  # 200 with the purchase the dead worker recorded, or 201 if none
        if failpoint != "statement_sent":
            expected = 200 if failpoint == "after_record" else 201
            assert response.status_code == expected, (failpoint, buy.hold_id, response.text)
        assert buy.written in (None, buy.retried["id"]), (buy.hold_id, buy.written)
    if response.status_code == 201:
        assert buy.retried["at"] < buy.expires_at, buy.hold_id


async def come_back(
    client: httpx.AsyncClient, container: Container, wave: list[Buy], failpoint: str, wait: bool
) -> None:
    """A wave's buyers retry: at once, or once the sweeper settled their claims."""
    if wait:
        await settled(container, wave)
    await asyncio.gather(*(retry(client, buy, failpoint) for buy in wave))


async def kill_wave(
    server: FailpointServer,
    http: httpx.AsyncClient,
    container: Container,
    failpoint: str,
    k: int,
    wave: list[Buy],
    at_once: bool,
) -> None:
    """One worker, IN_FLIGHT purchases, killed when the k-th reaches `failpoint`."""
    worker = await server.start_worker(failpoint, k)
    await asyncio.gather(*(try_buy(http, worker.url, buy) for buy in wave))
    death = await server.death(worker)
    assert death.status == -signal.SIGKILL, (death, server.tail())
    assert death.failpoint == failpoint, death
    (victim,) = [buy for buy in wave if buy.hold_id == death.reservation_id]
    victim.victim = True
    assert victim.answer is None, victim.answer.text
    written = (await rows_of(container, [victim.hold_id]))[victim.hold_id]
    if failpoint != "statement_sent":  # there, PostgreSQL may still be running it
        assert len(written) == (1 if failpoint == "after_record" else 0), (failpoint, written)
    victim.written = written[0] if written else None
    if at_once:  # a 30 s claim: nothing settles it before the retry
        entry = (await states(container, [victim.hold_id]))[victim.hold_id]
        assert entry is not None
        assert entry[0] == "PURCHASING", entry


async def reserve(client: httpx.AsyncClient, drop_id: str, buyer: Session, n: int) -> Buy:
    held = await client.post(f"/api/drops/{drop_id}/reserve", headers=auth(buyer.access_token))
    assert held.status_code == 201, held.text
    expires = datetime.fromisoformat(held.json()["expiresAt"].replace("Z", "+00:00"))
    key = f"buy-{n}" if n % IN_FLIGHT == 0 else None  # one buyer of each wave
    return Buy(held.json()["id"], buyer.access_token, expires, key)


def worker_env(stores: StoreUrls, data_dir: Path, claim_timeout: int) -> dict[str, str]:
    env = serve_env(stores, data_dir, "unused@example.com")
    for name in ("ADMIN_EMAIL", "ADMIN_PASSWORD"):  # no admin to make at each start
        del env[name]
    return {
        **env,
        # No hand-over of Socket.IO sessions (as for the tests' in-process apps): the
        # workers serve purchases, and the app they share, made before the forks, would
        # give them all one worker id.
        "SOCKET_FORWARD_HOST": "off",
        "RESERVATION_TTL_SECONDS": str(HOLD_SECONDS),
        "PURCHASE_CLAIM_TIMEOUT_SECONDS": str(claim_timeout),
    }


async def run_path(
    server: FailpointServer,
    client: httpx.AsyncClient,
    container: Container,
    buys: list[Buy],
    at_once: bool,
    retries: list[asyncio.Task[None]],
) -> float:
    """One kill per IN_FLIGHT buys, at each failpoint in turn, with k = 1..IN_FLIGHT in turn
    at each, LANES workers at a time; each wave's buyers come back (tasks added to
    `retries`) while the next waves run. Returns the seconds the kills took."""
    started = time.monotonic()
    waves = [buys[n : n + IN_FLIGHT] for n in range(0, len(buys), IN_FLIGHT)]

    async def lane(http: httpx.AsyncClient, first: int) -> None:
        for wave_number in range(first, len(waves), LANES):
            failpoint = FAILPOINTS[wave_number % len(FAILPOINTS)]
            k = (wave_number // len(FAILPOINTS)) % IN_FLIGHT + 1
            wave = waves[wave_number]
            await kill_wave(server, http, container, failpoint, k, wave, at_once)
            for done in [task for task in retries if task.done()]:
                done.result()  # a failed check stops the run here, not after every kill
            retries.append(
                asyncio.create_task(come_back(client, container, wave, failpoint, wait=not at_once))
            )

    # One client for every worker (making one costs ~0.1 s of CPU), no connection kept.
    limits = httpx.Limits(max_keepalive_connections=0)
    async with (
        httpx.AsyncClient(timeout=20, limits=limits) as http,
        asyncio.TaskGroup() as lanes,  # one failing stops the others
    ):
        for first in range(LANES):
            lanes.create_task(lane(http, first))
    return time.monotonic() - started


async def hold_all(
    client: httpx.AsyncClient, container: Container, count: int
) -> tuple[dict[str, Any], list[Buy]]:
    """A drop of `count` units, each held by one of BUYERS buyers."""
    admin = await admin_token(client, container)
    drop = await create_drop(client, admin, totalStock=count, perUserLimit=-(-count // BUYERS))
    buyers = await users(container, BUYERS)
    buys: list[Buy] = []
    for chunk in range(0, count, 50):  # a few at a time: the set-up is no storm
        numbers = range(chunk, min(chunk + 50, count))
        buys += await asyncio.gather(
            *(reserve(client, drop["id"], buyers[n % BUYERS], n) for n in numbers)
        )
    return drop, buys


async def test_workers_killed_at_each_failpoint_leave_every_hold_purchasable(
    make_app: AppFactory, stores: StoreUrls, tmp_path: Path
) -> None:
    # The sweeper plans its passes by the claim timeout: the shorter one of path B's workers.
    client, container = await make_app(
        reservation_ttl_seconds=HOLD_SECONDS,
        purchase_claim_timeout_seconds=SHORT_CLAIM_SECONDS,
        sweep_interval_ms=100,
    )
    count = KILLS * len(FAILPOINTS) * IN_FLIGHT
    half = count // 2
    retries: list[asyncio.Task[None]] = []
    try:
        # The fork servers import and make the app (about 2 s) while the holds are made.
        async with (
            failpoint_server(worker_env(stores, tmp_path / "a", 30), tmp_path / "a.log") as a,
            failpoint_server(
                worker_env(stores, tmp_path / "b", SHORT_CLAIM_SECONDS), tmp_path / "b.log"
            ) as b,
        ):
            drop, buys = await hold_all(client, container, count)
            async with asyncio.TaskGroup() as paths:  # one failing stops the other
                at_once = paths.create_task(
                    run_path(a, client, container, buys[:half], True, retries)
                )
                after_sweep = paths.create_task(
                    run_path(b, client, container, buys[half:], False, retries)
                )
        await asyncio.gather(*retries)
    finally:
        for task in retries:
            if not task.cancel() and not task.cancelled():
                task.exception()  # seen (the first failure is the one reported)
    kills = count // IN_FLIGHT
    print(
        f"\n{kills} kills: {kills // 2} in {at_once.result():.1f}s (retried at once),"
        f" {kills // 2} in {after_sweep.result():.1f}s (retried after the sweeper)"
    )

    victims = Counter(buy.retried["failpoint"] for buy in buys if buy.victim)
    assert victims == {failpoint: KILLS for failpoint in FAILPOINTS}, victims
    in_flight = Counter(
        buy.retried["status"]
        for buy in buys
        if buy.victim and buy.retried["failpoint"] == "statement_sent"
    )
    print(f"killed with the sale statement sent: retries answered {dict(in_flight)}")
    # The statement was on its way: PostgreSQL ran it without its client, mostly first.
    assert in_flight[200] >= KILLS // 2, in_flight
    rows = await rows_of(container, [buy.hold_id for buy in buys])
    ended = await states(container, [buy.hold_id for buy in buys])
    for buy in buys:
        assert rows[buy.hold_id] == [buy.retried["id"]], (buy.hold_id, rows[buy.hold_id])
        entry = ended[buy.hold_id]
        assert entry is not None
        assert entry[0] == "PURCHASED", (buy.hold_id, entry)
    view = (await client.get(f"/api/drops/{drop['id']}")).json()
    assert (view["availableStock"], view["activeReservations"]) == (0, 0), view
    await assert_invariant(container, drop["id"])
    await sneakerdrop_check(stores, tmp_path / "check")
