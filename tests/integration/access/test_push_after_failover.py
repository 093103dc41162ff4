"""Every status change of a ticket is pushed (`access_update`), in the cases where the
access leader could miss one.

An admission survives the leader that admitted it: a leader that dies after
queue_admit.lua admitted tickets but before it pushed them leaves them on the queue's
change list (q:changes, as a draw's e:changes), and the next leader pushes them. And a pass granted before the drop
ended still has its expiry pushed: the leader keeps tending the drop until every pass ran.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx

from app.background.access_leader import AccessLeader
from app.container import Container
from app.store.access import AccessStore, Admission
from tests.support.access import (
    bulk_users,
    eventually,
    from_now,
    iso,
    queue_drop,
    stop_the_apps_leader,
)
from tests.support.factories import admin_token


class DiesAfterAdmitting(AccessStore):
    """The leader's process dies right after the admission script that admitted the last
    of `tickets` returned. (Admissions accrue by the millisecond: a call right at startsAt
    may admit only some; those are pushed as usual.)"""

    def __init__(self, base: AccessStore, tickets: int) -> None:
        super().__init__(base.redis, base.scripts)
        self.tickets = tickets

    async def admit(self, drop_id: str, most: int) -> Admission:
        admission = await super().admit(drop_id, most)
        if admission.admitted and admission.served == self.tickets:
            raise asyncio.CancelledError
        return admission


async def test_an_admission_is_pushed_even_when_its_leader_died_before_pushing(
    client: httpx.AsyncClient, container: Container
) -> None:
    admin = await admin_token(client, container)
    await stop_the_apps_leader()
    drop = await queue_drop(client, admin, starts_in=1, admit_per_minute=60_000)
    users = await bulk_users(container, 3)
    for user in users:
        await container.access_service.join(user, drop["id"])
    pushed: list[tuple[str, dict[str, Any]]] = []

    async def notify(user: str, payload: dict[str, Any]) -> None:
        pushed.append((user, payload))

    stopping = asyncio.Event()
    dying = DiesAfterAdmitting(container.access_store, len(users))
    first = asyncio.create_task(
        AccessLeader(container.db, container.drop_store, dying, notify, stopping).run()
    )
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(first, 10)
    served = int(await container.redis.hget(f"{{d:{drop['id']}}}:q", "served") or 0)
    assert served == len(users)  # the dead leader's script admitted everyone

    second = asyncio.create_task(
        AccessLeader(
            container.db, container.drop_store, container.access_store, notify, stopping
        ).run()
    )
    try:

        async def everyone_told() -> bool:
            told = {u for u, p in pushed if p["ticket"]["status"] == "admitted"}
            return told == set(users)

        await eventually(everyone_told, 2)
    finally:
        stopping.set()
        await second


async def test_a_pass_that_outlives_the_drop_still_has_its_expiry_pushed(
    client: httpx.AsyncClient, container: Container
) -> None:
    admin = await admin_token(client, container)
    await stop_the_apps_leader()
    drop = await queue_drop(
        client,
        admin,
        starts_in=1,
        admit_per_minute=60_000,
        pass_seconds=3,
        endsAt=iso(from_now(2)),
    )
    [user] = await bulk_users(container, 1)
    await container.access_service.join(user, drop["id"])
    pushed: list[dict[str, Any]] = []

    async def notify(to: str, payload: dict[str, Any]) -> None:
        assert to == user
        pushed.append(payload["ticket"])

    stopping = asyncio.Event()
    leader = asyncio.create_task(
        AccessLeader(
            container.db, container.drop_store, container.access_store, notify, stopping
        ).run()
    )
    try:

        async def told(status: str) -> bool:
            return any(t["status"] == status for t in pushed)

        await eventually(lambda: told("admitted"), 5)
        ticket = next(t for t in pushed if t["status"] == "admitted")
        assert ticket["passExpiresAt"] > drop["endsAt"]  # the pass outlives the drop
        await eventually(lambda: told("expired"), 6)
    finally:
        stopping.set()
        await leader
