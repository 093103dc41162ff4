"""Access leaders killed mid-admission: no position is skipped or admitted twice.

A big queue is admitted at a high rate while leader after leader is cancelled at a
random moment (between script calls, or while a call's reply is on its way back) and a
new one started with nothing in memory. A watcher reads `served` all along; every
admission a leader saw is logged. At the end every position 1..n was admitted once, in
position order, and `served` never went back. (tests/e2e/test_access_leader_killed.py
does the same with a real `serve` killed by SIGKILL.)
"""

from __future__ import annotations

import asyncio
import contextlib
import random

import httpx
import pytest

from app.background.access_leader import AccessLeader
from app.container import Container
from app.store.access import AccessStore, Admission
from app.store.keys import DropKeys
from tests.support.access import (
    bulk_users,
    fixed_record,
    queue_drop,
    queue_snapshot,
    stop_the_apps_leader,
)
from tests.support.factories import admin_token

TICKETS = 4000
RATE = 100_000  # per minute: about 1,670 a second, 500 per script call


class LoggingStore(AccessStore):
    """The access store, logging each admission a leader got the reply of."""

    def __init__(self, base: AccessStore, log: list[tuple[str, int, list[str]]]) -> None:
        super().__init__(base.redis, base.scripts)
        self.log = log

    async def admit(self, drop_id: str, most: int) -> Admission:
        admission = await super().admit(drop_id, most)
        self.log.append((drop_id, admission.served, [e for e, _ in admission.admitted]))
        return admission


@pytest.mark.timeout(60)
async def test_leaders_killed_mid_admission_skip_and_repeat_no_position(
    client: httpx.AsyncClient, container: Container
) -> None:
    admin = await admin_token(client, container)
    await stop_the_apps_leader()
    drop = await queue_drop(client, admin, starts_in=4, admit_per_minute=RATE, pass_seconds=600)
    drop_id = drop["id"]
    for user in await bulk_users(container, TICKETS):
        ticket, _ = await container.access_service.join(user, drop_id)
        assert ticket.position is None, "joined after the start: raise starts_in"

    log: list[tuple[str, int, list[str]]] = []
    store = LoggingStore(container.access_store, log)
    served_seen: list[int] = []
    done = asyncio.Event()

    async def watch() -> None:
        while not done.is_set():
            served_seen.append(int(await container.redis.hget(DropKeys(drop_id).q, "served") or 0))
            await asyncio.sleep(0.002)

    watcher = asyncio.create_task(watch())
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    kills = mid_admission = 0
    try:
        while True:
            stopping = asyncio.Event()
            leader = AccessLeader(container.db, container.drop_store, store, None, stopping)
            task = asyncio.create_task(leader.run())
            await asyncio.sleep(rng.uniform(0.02, 0.4))  # the kill's moment, not a wait
            if served_seen and served_seen[-1] >= TICKETS:
                stopping.set()
                await task
                break
            # The kill; `stopping` too, as the app's own stop does: on Python 3.11 a
            # cancel that lands as redis-py's internal wait_for completes is swallowed.
            task.cancel()
            stopping.set()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if served_seen and 0 < served_seen[-1] < TICKETS:
                mid_admission += 1
            kills += 1
            assert kills < 500, f"admission did not finish (seed {seed})"
    finally:
        done.set()
        await watcher

    await fixed_record(client, drop_id)
    snap = await queue_snapshot(container, drop_id)
    assert snap.served == TICKETS
    assert all(snap.admitted_ms), "a position was skipped"
    assert snap.admitted_ms == sorted(snap.admitted_ms), "admitted out of position order"
    assert served_seen == sorted(served_seen), "served went back"
    seen = [entry for _, _, admitted in log for entry in admitted]
    assert len(seen) == len(set(seen)), "a ticket was admitted twice"
    position_of = {entry_id: n for n, entry_id in enumerate(snap.entry_ids, 1)}
    assert [position_of[e] for e in seen] == sorted(position_of[e] for e in seen)
    passes = await container.redis.zcard(DropKeys(drop_id).q_passes)
    assert passes == TICKETS
    assert mid_admission >= 3, f"only {mid_admission} leaders killed mid-admission (seed {seed})"
    print(
        f"leader failover: {kills} leaders killed, {mid_admission} mid-admission, "
        f"{len(seen)} of {TICKETS} admissions seen by a leader (seed {seed})"
    )
