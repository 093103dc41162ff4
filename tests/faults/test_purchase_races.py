"""A purchase racing a cancel; a purchase whose PostgreSQL fails with no time left; a
purchase racing expiry through the sweeper's void of its stale claim.

Cancel against purchase: on 1,000 holds a DELETE and a purchase are fired together, and
exactly one of them wins each hold.

Abort with no time left: purchases wait for PostgreSQL while their holds' deadlines come,
a few inside their sale statement (a session holds the drop's exclusive advisory lock, as
a rebuild does), the rest for a connection of the sales pool; PostgreSQL then fails
(tests/support/latency_proxy.py resets every connection and refuses new ones) just
before, at or just after each deadline. Every purchase answers 503. One refused before
its statement ran wrote nothing and puts the hold back at once: ACTIVE with its timer
re-armed for what is left, or, with nothing left, released at once. One whose statement
was cut short may have committed as far as the app can tell (its backend runs on
without its client), so its hold stays PURCHASING until the sweeper, once PostgreSQL is
back, voids the attempt and releases the unit. The sweeper is held off until then, so
nothing but those paths can return a unit: a hold left ACTIVE without a timer would stay
held.

Through the void: the purchaser pauses past its claim timeout (at the purchase's
failpoints), and the sweeper settles the stale claim around the hold's deadline: it
voids an attempt that wrote nothing (the purchase then tries again: it buys while the
hold has time left, else answers 410) and commits one whose row was written. Each
trial ends bought (201, one row, PURCHASED) or expired (410, no row, EXPIRED, the unit
back), never both.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from app.background.sweeper import Sweeper
from app.container import Container
from app.services.auth import Session
from app.store import keys
from app.store.holds import ClaimResult, ReleaseReason, ReleaseResult
from tests.integration.engine.helpers import (
    AppFactory,
    available,
    live_holds,
    purchase,
    redis_time_reached,
    users,
    wait_until,
)
from tests.support.drop_lock import DROP_LOCK, DROP_UNLOCK, waiting_on_lock
from tests.support.factories import (
    admin_token,
    assert_holds_in_step,
    assert_invariant,
    auth,
    create_drop,
)
from tests.support.faults import ANSWER_SECONDS, assert_unavailable, sneakerdrop_check
from tests.support.latency_proxy import LatencyProxy
from tests.support.purchase_races import (
    Trial,
    all_ended,
    claim_outcomes,
    closed_states,
    closings,
    fire,
    judge,
    past_reload_window,
    purchase_rows,
)
from tests.support.stores import StoreUrls, _plain

HOLDS = 1000
HOLDERS = 100  # ten holds each
SPARE = 100  # units never held: the stock check sees cancelled units on top of these
RACES_AT_ONCE = 50  # holds raced at a time, each by its DELETE and its purchase


class StoreRendezvous:
    """Lines up each raced hold's two store calls: the purchase's claim and the DELETE's
    release wait for each other, then both go to Redis in the same event-loop turn, in
    a random order.

    Over HTTP alone the race is lopsided: the purchase reaches its claim script in its
    first Redis call, the DELETE only after three (its sign-out check, the hold's entry,
    the server's start time), so fired together the purchase always won here, and a
    DELETE given a head start of even 30 ms still lost 97 % of the time on this loaded
    machine. Lining the two scripts up makes every hold a real race at Redis, where
    one of them must lose."""

    def __init__(self, container: Container, rng: random.Random) -> None:
        self.store = container.hold_store
        self.rng = rng
        self.waiting: dict[str, asyncio.Future[None]] = {}
        self.claim, self.release = self.store.claim, self.store.release
        self.store.claim = self._claim  # type: ignore[method-assign]
        self.store.release = self._release  # type: ignore[method-assign]

    def close(self) -> None:
        self.store.claim = self.claim  # type: ignore[method-assign]
        self.store.release = self.release  # type: ignore[method-assign]

    async def _meet(self, hold_id: str) -> None:
        other = self.waiting.pop(hold_id, None)
        if other is None:  # first to arrive: wait for the other
            arrived = asyncio.get_running_loop().create_future()
            self.waiting[hold_id] = arrived
            async with asyncio.timeout(ANSWER_SECONDS):
                await arrived
            return
        other.set_result(None)
        if self.rng.random() < 0.5:
            await asyncio.sleep(0)  # let the first arrival's script leave first

    async def _claim(self, ref: keys.HoldRef, *args: Any, **kwargs: Any) -> ClaimResult:
        await self._meet(ref.hold_id)
        return await self.claim(ref, *args, **kwargs)

    async def _release(
        self, ref: keys.HoldRef, reason: ReleaseReason, owner: str = ""
    ) -> ReleaseResult:
        if reason is ReleaseReason.CANCELLED:
            await self._meet(ref.hold_id)
        return await self.release(ref, reason, owner)


@dataclass
class Race:
    hold_id: str
    purchase: httpx.Response
    cancel: httpx.Response

    def outcome(self) -> tuple[object, ...]:
        def code(response: httpx.Response) -> str | None:
            return response.json().get("code") if response.status_code >= 400 else None

        return (
            self.purchase.status_code,
            code(self.purchase),
            self.cancel.status_code,
            code(self.cancel),
        )


PURCHASE_WON = (201, None, 409, "RESERVATION_PURCHASED")
CANCEL_WON = (409, "RESERVATION_CANCELLED", 204, None)


async def race(client: httpx.AsyncClient, hold_id: str, buyer: Session) -> Race:
    """The DELETE and the purchase of one hold, fired together."""
    bought, cancelled = await asyncio.gather(
        purchase(client, hold_id, buyer.access_token),
        client.delete(f"/api/reservations/{hold_id}", headers=auth(buyer.access_token)),
    )
    return Race(hold_id, bought, cancelled)


@pytest.mark.slow
async def test_cancel_against_purchase_one_winner_per_hold(
    make_app: AppFactory, stores: StoreUrls, tmp_path: Path
) -> None:
    client, container = await make_app()
    admin = await admin_token(client, container)
    total = HOLDS + SPARE
    per_holder = HOLDS // HOLDERS
    drop = await create_drop(client, admin, totalStock=total, perUserLimit=per_holder)
    crowd = await users(container, HOLDERS)
    await past_reload_window(container)
    holds: list[tuple[str, Session]] = []
    for buyer in crowd:
        for _ in range(per_holder):
            hold = await container.hold_service.reserve(buyer.user.id, drop["id"])
            holds.append((hold.id, buyer))
    rng = random.Random(7)
    rng.shuffle(holds)

    rendezvous = StoreRendezvous(container, rng)
    races: list[Race] = []
    try:
        for start in range(0, HOLDS, RACES_AT_ONCE):
            batch = holds[start : start + RACES_AT_ONCE]
            races += await asyncio.gather(*(race(client, h, buyer) for h, buyer in batch))
    finally:
        rendezvous.close()

    outcomes = Counter(r.outcome() for r in races)
    print(f"\ncancel against purchase on {HOLDS} holds: {dict(outcomes)}")
    assert set(outcomes) <= {PURCHASE_WON, CANCEL_WON}, outcomes
    rows = await purchase_rows(container, drop["id"])
    ended = await closed_states(container, drop["id"])
    for r in races:
        if r.outcome() == PURCHASE_WON:
            assert rows.get(r.hold_id) == r.purchase.json()["id"], r.hold_id
            assert ended[r.hold_id] == "PURCHASED", r.hold_id
        else:
            assert r.hold_id not in rows, r.hold_id
            assert ended[r.hold_id] == "CANCELLED", r.hold_id
    bought, cancelled = outcomes[PURCHASE_WON], outcomes[CANCEL_WON]
    assert len(rows) == bought
    # Stock is exact: each cancelled unit came back once, each bought one is sold.
    assert await live_holds(container, drop["id"]) == 0
    assert await available(container, drop["id"]) == SPARE + cancelled
    counters = await container.drop_store.counters(drop["id"])
    assert counters is not None
    assert counters[2] == bought  # Redis's sold count
    # Both winners occur in volume.
    assert bought >= HOLDS // 5, outcomes
    assert cancelled >= HOLDS // 5, outcomes
    await assert_invariant(container, drop["id"])
    await sneakerdrop_check(stores, tmp_path / "data")


# --- abort with no time left -----------------------------------------------------------

ROUNDS = 3
PER_ROUND = 30
TTL_SECONDS = 2
SALE_POOL = 5  # so a few purchases wait inside the statement, most for a connection
CLAIM_SECONDS = 2  # the least allowed: how soon the sweeper may settle a cut-short sale
# Each hold's deadline, from the moment PostgreSQL fails: from well before (the abort
# finds it past due: released at once) to a little after (re-armed for what is left).
DEADLINE_FROM_CUT_MS = (-150.0, 250.0)
FIRE_BEFORE_CUT_MS = 1200  # all purchases claim before the earliest deadline


# One atomic read of one hold: its live entry, timer, due score, tombstone, Redis time.
_HOLD_LUA = """
local t = redis.call('TIME')
return {redis.call('HGET', KEYS[1], ARGV[1]), redis.call('PTTL', KEYS[2]),
        redis.call('ZSCORE', KEYS[3], ARGV[1]), redis.call('HGET', KEYS[4], ARGV[1]),
        tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)}
"""


async def hold_right_after(container: Container, hold_id: str) -> str:
    """How the hold stands the moment its purchase answered: ended, or ACTIVE with a
    timer for what is left (or past its deadline, for the listener to end), or still
    PURCHASING when the statement was cut short; never ACTIVE with time left and no
    timer."""
    ref = keys.parse_hold_id(hold_id)
    assert ref is not None
    k = keys.DropKeys(ref.drop_id)
    entry, pttl, due, closed, now_ms = await container.redis.eval(
        _HOLD_LUA, 4, k.holds, k.timer(hold_id), k.due, k.closed, hold_id
    )
    if entry is None:
        assert str(closed).startswith("EXPIRED|"), (hold_id, closed)
        return "released at once"
    state, _, expires, _ = str(entry).split("|", 3)
    assert due is not None, (hold_id, entry)
    if state == "PURCHASING":  # due at its claim deadline, for the sweeper
        assert int(float(due)) > int(now_ms), (hold_id, entry, due)
        return "purchasing, outcome unknown"
    assert state == "ACTIVE", (hold_id, entry)
    assert int(float(due)) == int(expires), (hold_id, entry, due)
    left = int(expires) - int(now_ms)
    if int(pttl) > 0:
        assert int(pttl) <= left + 50, (hold_id, entry, pttl, left)  # never outlives it
        return "re-armed"
    assert left <= 5, f"{hold_id}: ACTIVE, {left} ms left, no timer"  # 5: TIME vs PTTL
    return "past due, timer fired"


class InStepWatch:
    """Checks the drop's live holds in one atomic read, again and again, until stopped:
    holds hash and due set agree, every ACTIVE hold with time left has its timer."""

    def __init__(self, container: Container, drop_id: str) -> None:
        self.container = container
        self.drop_id = drop_id
        self.reads = 0
        self.failure: AssertionError | None = None
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                await assert_holds_in_step(self.container.redis, self.drop_id)
            except AssertionError as exc:
                self.failure = exc
                return
            self.reads += 1
            await asyncio.sleep(0.003)  # a read every few ms: states last at least that

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        if self.failure is not None:
            raise self.failure


async def all_purchasing(container: Container, hold_ids: list[str]) -> bool:
    ref = keys.parse_hold_id(hold_ids[0])
    assert ref is not None
    entries = await container.redis.hmget(keys.DropKeys(ref.drop_id).holds, hold_ids)
    return all(e is not None and str(e).startswith("PURCHASING|") for e in entries)


async def sleep_until(moment: float) -> None:
    await asyncio.sleep(max(0.0, moment - time.time()))  # a schedule, not a wait for state


@dataclass
class Round:
    """What one round saw: how each hold stood as its purchase answered, how long after
    PostgreSQL failed each answer came, and how many in-step reads watched it."""

    right_after: list[str]
    answered_in: list[float]
    reads: int


async def abort_round(
    client: httpx.AsyncClient,
    container: Container,
    proxy: LatencyProxy,
    locker: asyncpg.Connection,
    drop_id: str,
    crowd: list[Session],
    rng: random.Random,
) -> Round:
    cut_at = time.time() + TTL_SECONDS + 0.5
    offsets = sorted(rng.uniform(*DEADLINE_FROM_CUT_MS) for _ in crowd)
    # Each hold taken so that its deadline falls at its offset from the cut.
    held: list[tuple[str, Session]] = []
    for buyer, offset in zip(crowd, offsets, strict=True):
        await sleep_until(cut_at + offset / 1000 - TTL_SECONDS)
        hold = await container.hold_service.reserve(buyer.user.id, drop_id)
        held.append((hold.id, buyer))
    hold_ids = [hold_id for hold_id, _ in held]

    await locker.execute(DROP_LOCK, drop_id)
    await sleep_until(cut_at - FIRE_BEFORE_CUT_MS / 1000)
    buying = [
        asyncio.create_task(purchase(client, hold_id, buyer.access_token))
        for hold_id, buyer in held
    ]
    # Every purchase claimed its hold; those with a connection wait on the lock.
    await wait_until(
        lambda: all_purchasing(container, hold_ids),
        within=FIRE_BEFORE_CUT_MS / 1000 - 0.2,
        what="every purchase to claim its hold",
    )
    await wait_until(
        lambda: waiting_on_lock(locker, min(len(crowd), SALE_POOL)),
        within=1,
        what="sales waiting on the drop lock",
    )
    watch = InStepWatch(container, drop_id)
    await sleep_until(cut_at)
    cut = time.monotonic()
    await proxy.cut()  # PostgreSQL fails: connections reset, new ones refused
    answered_in: list[float] = []

    async def answer(task: asyncio.Task[httpx.Response], hold_id: str) -> str:
        async with asyncio.timeout(ANSWER_SECONDS):
            response = await task
        answered_in.append(time.monotonic() - cut)
        assert_unavailable(response)
        return await hold_right_after(container, hold_id)

    right_after = await asyncio.gather(
        *(answer(task, hold_id) for task, hold_id in zip(buying, hold_ids, strict=True))
    )
    cut_short = [h for h, state in zip(hold_ids, right_after, strict=True) if "unknown" in state]
    # PostgreSQL comes back. The sweeper settles the claims of the sales cut short once
    # their claim deadline has passed: voided (the lock still holds their backends back),
    # so each hold is ACTIVE again, past its deadline, and released.
    await proxy.heal()
    claim_due = int((cut_at + CLAIM_SECONDS) * 1000)
    await wait_until(
        lambda: redis_time_reached(container, claim_due),
        within=CLAIM_SECONDS + 1,
        what="claims due",
    )
    await Sweeper(container.hold_store, container.db).sweep([drop_id])
    # Nothing but the abort, the re-armed timers and that sweep can end these holds.
    await all_ended(container, drop_id, within=2)
    await watch.stop()
    await locker.execute(DROP_UNLOCK, drop_id)  # the cut-short backends find their claims voided
    assert await purchase_rows(container, drop_id) == {}, cut_short
    return Round(list(right_after), answered_in, watch.reads)


@pytest.mark.slow
async def test_abort_with_no_time_left_returns_the_unit_once(
    pg_proxy: LatencyProxy, make_app: AppFactory, stores: StoreUrls, tmp_path: Path
) -> None:
    client, container = await make_app(
        database_url=pg_proxy.url,
        reservation_ttl_seconds=TTL_SECONDS,
        reserve_cooldown_seconds=0,
        db_pool_size=SALE_POOL,
        purchase_claim_timeout_seconds=CLAIM_SECONDS,
        sweep_interval_ms=60_000,  # held off: only the abort, the timer and the test sweep
    )
    admin = await admin_token(client, container)
    total = ROUNDS * PER_ROUND
    drop = await create_drop(client, admin, totalStock=total, perUserLimit=ROUNDS)
    crowd = await users(container, PER_ROUND)
    await past_reload_window(container)
    locker = await asyncpg.connect(_plain(stores.database_url))
    rng = random.Random(4)
    try:
        rounds = [
            await abort_round(client, container, pg_proxy, locker, drop["id"], crowd, rng)
            for _ in range(ROUNDS)
        ]
    finally:
        await locker.close()

    right_after = Counter(state for r in rounds for state in r.right_after)
    slowest = max(seconds for r in rounds for seconds in r.answered_in)
    print(
        f"\nabort with no time left, {total} purchases: {dict(right_after)}; each answered "
        f"503 within {slowest * 1000:.0f} ms of PostgreSQL failing; "
        f"{sum(r.reads for r in rounds)} in-step reads of the drop meanwhile"
    )
    # Both abort paths ran in volume: released by the purchase itself, and re-armed
    # timers; and some sales were cut short in their statement.
    assert right_after["released at once"] >= total // 5, right_after
    assert right_after["re-armed"] >= total // 5, right_after
    assert right_after["purchasing, outcome unknown"] >= ROUNDS, right_after
    ended = await closed_states(container, drop["id"])
    assert len(ended) == total
    assert set(ended.values()) == {"EXPIRED"}, Counter(ended.values())
    assert await available(container, drop["id"]) == total  # each unit back exactly once
    assert await purchase_rows(container, drop["id"]) == {}
    await assert_invariant(container, drop["id"])
    await sneakerdrop_check(stores, tmp_path / "data")


# --- purchase against expiry through the sweeper's void ------------------------------

VOID_TRIALS = 210
VOID_TTL_SECONDS = 3
CLAIM_TIMEOUT_SECONDS = 2
VOID_STARTS_PER_SECOND = 20  # the sweeper settles stale claims one at a time
# When the claim deadline falls, from the hold's own: the sweeper voids the claim on its
# next pass after it (SWEEP_INTERVAL_MS 50, plus its queue: 20-170 ms measured here), so
# aiming a little early puts the void on both sides of the hold's deadline.
VOID_AIM_MS = (-250.0, 50.0)


@dataclass
class Stall:
    """Where one trial's purchaser pauses, as if stopped past its claim timeout."""

    hold_id: str
    point: str  # "after_claim": nothing written yet; "after_record": the row committed
    done: bool = False


STALL: ContextVar[Stall | None] = ContextVar("stall", default=None)


class SettlementWatch:
    """Tells each paused purchaser when the sweeper has settled its stale claim (the hold
    is no longer PURCHASING: voided back to ACTIVE, released, or committed). One poller
    reads every watched hold in one round trip, so hundreds of pauses cost one call per
    tick, not one each."""

    def __init__(self, container: Container, drop_id: str) -> None:
        self.redis = container.redis
        self.holds_key = keys.DropKeys(drop_id).holds
        self.waiting: dict[str, asyncio.Future[None]] = {}
        self.task: asyncio.Task[None] | None = None

    async def settled(self, hold_id: str) -> None:
        settled = asyncio.get_running_loop().create_future()
        self.waiting[hold_id] = settled
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._poll())
        async with asyncio.timeout(CLAIM_TIMEOUT_SECONDS + 5):
            await settled

    async def _poll(self) -> None:
        while self.waiting:
            ids = list(self.waiting)
            entries = await self.redis.hmget(self.holds_key, ids)
            for hold_id, entry in zip(ids, entries, strict=True):
                if entry is None or not str(entry).startswith("PURCHASING|"):
                    self.waiting.pop(hold_id).set_result(None)
            await asyncio.sleep(0.01)  # a poll tick: the settlement raises no event


def stall_hook(watch: SettlementWatch) -> Callable[[str], Awaitable[None]]:
    """The purchase's failpoint hook: a trial's first attempt stops at its point until
    the sweeper has settled its stale claim, then goes on as a purchaser that was merely
    slow. Other calls (the retry after a void, other points) pass."""

    async def hook(point: str) -> None:
        stall = STALL.get()
        if stall is None or stall.done or point != stall.point:
            return
        stall.done = True
        await watch.settled(stall.hold_id)

    return hook


async def run_stalled_trial(
    client: httpx.AsyncClient,
    container: Container,
    drop_id: str,
    buyer: Session,
    start_at: float,
    point: str,
    aim_ms: float,
) -> Trial:
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))  # the trial's start slot
    hold = await container.hold_service.reserve(buyer.user.id, drop_id)
    deadline = int(hold.expires_at.timestamp() * 1000 + 0.5)
    STALL.set(Stall(hold.id, point))  # seen by the hook inside this trial's request
    # The claim is settled a claim timeout (plus the sweeper's next pass) after it is
    # made: aim that moment near the hold's own deadline.
    claim_at = deadline - CLAIM_TIMEOUT_SECONDS * 1000 + aim_ms
    return await fire(client, buyer, hold.id, claim_at, deadline)


@pytest.mark.slow
async def test_purchase_against_expiry_when_the_claim_is_voided(
    make_app: AppFactory, stores: StoreUrls, tmp_path: Path
) -> None:
    client, container = await make_app(
        reservation_ttl_seconds=VOID_TTL_SECONDS,
        purchase_claim_timeout_seconds=CLAIM_TIMEOUT_SECONDS,
        sweep_interval_ms=50,
        reserve_cooldown_seconds=0,
    )
    admin = await admin_token(client, container)
    buyers = VOID_TRIALS // 3
    drop = await create_drop(client, admin, totalStock=VOID_TRIALS, perUserLimit=3)
    crowd = await users(container, buyers, prefix="v")
    await past_reload_window(container)
    container.hold_service.fault_hook = stall_hook(SettlementWatch(container, drop["id"]))

    rng = random.Random(1919)
    plans = [
        ("after_claim" if i % 3 else "after_record", rng.uniform(*VOID_AIM_MS))
        for i in range(VOID_TRIALS)
    ]
    began = time.monotonic()
    try:
        trials = await asyncio.gather(
            *(
                run_stalled_trial(
                    client,
                    container,
                    drop["id"],
                    crowd[i % buyers],
                    began + i / VOID_STARTS_PER_SECOND,
                    point,
                    aim,
                )
                for i, (point, aim) in enumerate(plans)
            )
        )
    finally:
        container.hold_service.fault_hook = None
    await all_ended(container, drop["id"], within=10)

    outcomes = Counter((point, t.status) for t, (point, _) in zip(trials, plans, strict=True))
    print(f"\npurchases paused past the claim timeout: {dict(outcomes)}")
    rows = await purchase_rows(container, drop["id"])
    ended = {rid: state for rid, (state, _) in (await closings(container, drop["id"])).items()}
    judge(trials, rows, ended)
    attempts = await claim_outcomes(container, drop["id"])
    for t, (point, _) in zip(trials, plans, strict=True):
        tried = attempts.get(t.hold_id, {})
        if point == "after_record":
            # Written before the pause: the sweeper found the row and committed it.
            assert t.status == 201, t
            assert tried == {"recorded": 1}, (t, tried)
        else:
            # The paused attempt was voided, once; a retry recorded the sale, or found
            # the hold expired.
            expected = {"voided": 1, "recorded": 1} if t.status == 201 else {"voided": 1}
            assert tried == expected, (t, tried)
    assert await available(container, drop["id"]) == VOID_TRIALS - len(rows)
    # The void landed on both sides of the deadline, in volume.
    assert outcomes["after_claim", 201] >= 20, outcomes
    assert outcomes["after_claim", 410] >= 20, outcomes

    await assert_invariant(container, drop["id"])
    await sneakerdrop_check(stores, tmp_path / "data")
