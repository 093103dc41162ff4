"""The access leader: admits queue tickets, draws, hands units over and records the order.

One process per deployment leads (a lease, like the sweeper's). Each tick it tends every
queue and draw drop on the list (app/store/access.py):

- a queue drop: once Redis's clock reaches startsAt, records the pre-queue's order in
  PostgreSQL and so reveals the seed; admits the tickets that are due (queue_admit.lua)
  and pushes `access_update` to their owners, and to owners whose pass ended; when the
  drop closes (sold out, ended, cancelled) or opens again, pushes every waiting ticket;
- a draw drop: from closesAt, draws in chunks (draw_run.lua) until done, records the
  order and each entry's outcome; then settles (draw_settle.lua: hand-overs, entries
  lost) and pushes and records every entry whose status changed.

Every step is a script that moves its own cursor in the same call, so a leader that dies
mid-step is replaced by one that carries on where it stopped: no position is skipped or
admitted twice, no entry drawn twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from redis.exceptions import RedisError

from app import metrics
from app.background.stopping import pause
from app.db import access as access_rows
from app.db.session import Database
from app.domain import Access, DropDefinition
from app.services.access import entry_of, ticket_of
from app.store.access import AccessStore, OrderRow, TicketFacts
from app.store.drops import DropStore
from app.store.keys import ACCESS_LEASE, DropKeys
from app.store.leases import Lease

log = logging.getLogger(__name__)

TICK_SECONDS = 0.25
LEASE_SECONDS = 5.0
STEP = 250  # tickets admitted or draw entries settled per script call (each well under 5 ms)
# Work one draw script call may do, in Redis commands: about a millisecond of Redis time here
# (docs/BENCHMARKS.md, fair access), well under the 5 ms any script may take.
SCRIPT_BUDGET = 500
PUSH_PAGE = 500

# (user id, payload): sends `access_update` to the user's sockets, wherever they are.
Notify = Callable[[str, dict[str, Any]], Awaitable[None]]


class AccessLeader:
    def __init__(
        self,
        db: Database,
        drops: DropStore,
        store: AccessStore,
        notify: Notify | None,
        stopping: asyncio.Event,
    ) -> None:
        self.db = db
        self.drops = drops
        self.store = store
        self.notify = notify
        self.stopping = stopping
        self.lease = Lease(store.redis, ACCESS_LEASE, LEASE_SECONDS)
        self._fixed: set[str] = set()  # drops whose order PostgreSQL has
        self._closed: dict[str, bool] = {}  # a queue drop's last closed state seen
        self._broadcasts: dict[str, asyncio.Task[None]] = {}  # pushes to a whole queue
        self._recording: dict[str, asyncio.Task[None]] = {}  # audit rows being written
        self._recorded: set[str] = set()  # drops whose audit rows are written
        self._moments: list[datetime] = []  # the tended drops' starts and closesAt

    async def run(self) -> None:
        try:
            while not self.stopping.is_set():
                try:
                    if await self.lease.refresh():
                        with metrics.BACKGROUND_PASS.labels(task="access").time():
                            await self.tick()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    metrics.BACKGROUND_ERRORS.labels(task="access").inc()
                    log.warning("access pass failed", exc_info=True)
                await pause(self.stopping, self._until_next_tick())
        finally:
            for task in [*self._broadcasts.values(), *self._recording.values()]:
                task.cancel()
            await self.lease.release()

    def _until_next_tick(self) -> float:
        """A tick's pause, cut short to wake right at the next start or closesAt due."""
        now = datetime.now(UTC)
        soon = [moment for moment in self._moments if moment > now]
        if not soon:
            return TICK_SECONDS
        return min(TICK_SECONDS, (min(soon) - now).total_seconds() + 0.001)

    async def tick(self) -> None:
        ids = await self.store.tended()
        found = await self.drops.read(ids)
        self._moments = [
            moment
            for mirrored in found.values()
            for moment in (mirrored.definition.starts_at, mirrored.definition.access.closes_at)
            if moment is not None
        ]
        for drop_id in ids:
            mirrored = found.get(drop_id)
            if mirrored is None:
                continue  # not in Redis: rebuilt (and listed again) on its next use
            definition = mirrored.definition
            if definition.access.access is Access.QUEUE:
                await self.tend_queue(definition)
            elif definition.access.access is Access.DRAW:
                await self.tend_draw(definition)

    # --- queue --------------------------------------------------------------------

    async def tend_queue(self, drop: DropDefinition) -> None:
        while True:
            admission = await self.store.admit(drop.id, STEP)
            if admission.state != "NOT_STARTED" and not await self._order_fixed(drop.id):
                await self._record_order(drop.id, queue=True)
            if admission.state != "NOT_STARTED":
                self._record_entries_later(drop.id, queue=True)
            while await self._report_queue_changes(drop.id):
                pass
            closed = admission.state == "CLOSED"
            if admission.state != "NOT_STARTED" and self._closed.get(drop.id, False) != closed:
                self._closed[drop.id] = closed
                self._push_all_waiting(drop.id)
            if len(admission.admitted) < STEP and len(admission.ended) < STEP:
                break
        if self._over(drop) and drop.id in self._fixed and not admission.ended:
            # Nobody can be admitted any more; passes granted before the end still run,
            # and each one's expiry is pushed before the drop leaves the list.
            if not await self.store.redis.zcard(DropKeys(drop.id).q_passes):
                await self.store.done_with(drop.id)

    async def _report_queue_changes(self, drop_id: str) -> bool:
        """Push the tickets admitted or whose pass ended (queue_admit.lua lists them), then
        mark them pushed (the list drops them); True when a page was full."""
        page = await self.store.queue_log(drop_id, PUSH_PAGE)
        if not page.entry_ids:
            return False
        owners = await self.store.ticket_owners(drop_id, page.entry_ids)
        users = list(dict.fromkeys(user for user in owners if user is not None))
        await self._push_tickets(drop_id, users, waiting_only=False)
        await self.store.queue_log_read(drop_id, page.end)
        return len(page.entry_ids) == PUSH_PAGE

    async def _push_tickets(self, drop_id: str, users: list[str], waiting_only: bool) -> None:
        """Each user's ticket as it is now, to their sockets; read PUSH_PAGE at a time."""
        if self.notify is None:
            return
        for first in range(0, len(users), PUSH_PAGE):
            page = users[first : first + PUSH_PAGE]
            read = await asyncio.gather(*(self.store.ticket(drop_id, user) for user in page))
            for user, (_, facts) in zip(page, read, strict=True):
                if facts is None or (waiting_only and facts.admitted_at_ms):
                    continue
                payload = {
                    "dropId": drop_id,
                    "kind": "queue",
                    "ticket": _ticket_json(drop_id, facts),
                }
                await self.notify(user, payload)

    def _push_all_waiting(self, drop_id: str) -> None:
        """The drop closed or opened again: every waiting ticket's status changed. Told
        in a task of its own, so a big queue does not hold up the other drops' ticks."""
        running = self._broadcasts.get(drop_id)
        if running is not None and not running.done():
            running.cancel()  # its news is stale: the state flipped again
        self._broadcasts[drop_id] = asyncio.create_task(
            self._push_waiting_pages(drop_id), name=f"access-push-{drop_id}"
        )

    async def _push_waiting_pages(self, drop_id: str) -> None:
        cursor = 0
        try:
            while True:
                cursor, users = await self.store.waiting_users(drop_id, cursor, PUSH_PAGE)
                await self._push_tickets(drop_id, users, waiting_only=True)
                if cursor == 0:
                    return
        except (RedisError, OSError):
            log.warning("could not tell a queue's waiting tickets", exc_info=True)

    # --- draw -----------------------------------------------------------------------

    async def tend_draw(self, drop: DropDefinition) -> None:
        step = await self.store.draw(drop.id, SCRIPT_BUDGET)
        while step.state == "DRAWING":
            step = await self.store.draw(drop.id, SCRIPT_BUDGET)
        if step.state == "NOT_YET":
            return
        if not await self._order_fixed(drop.id):
            await self._record_order(drop.id, queue=False)
        while await self._report_draw_changes(drop.id):
            pass  # the winners hear first
        while await self.store.build_standby(drop.id, SCRIPT_BUDGET) == "BUILDING":
            pass
        more = True
        while more:
            _, _, more = await self.store.settle(drop.id, STEP)
        while await self._report_draw_changes(drop.id):
            pass
        self._record_entries_later(drop.id, queue=False)
        if self._entries_done(drop.id):
            while await self._record_draw_outcomes(drop.id):
                pass
            if self._over(drop) and not await self._unrecorded(drop.id):
                await self.store.done_with(drop.id)

    async def _report_draw_changes(self, drop_id: str) -> bool:
        """Push the entries whose status changed; True when a page was full."""
        page = await self.store.draw_log(drop_id, "pushed", PUSH_PAGE)
        if not page.entry_ids:
            return False
        if self.notify is not None:
            entries = await self.store.entries_of(drop_id, page.entry_ids)
            for entry_id in dict.fromkeys(page.entry_ids):
                user, facts = entries[entry_id]
                entry = entry_of(drop_id, facts).to_wire()
                await self.notify(user, {"dropId": drop_id, "kind": "draw", "entry": entry})
        await self.store.draw_log_read(drop_id, "pushed", page.end)
        return len(page.entry_ids) == PUSH_PAGE

    async def _unrecorded(self, drop_id: str) -> bool:
        """Whether a draw change waits to be recorded in PostgreSQL."""
        return bool((await self.store.draw_log(drop_id, "recorded", 1)).entry_ids)

    async def _record_draw_outcomes(self, drop_id: str) -> bool:
        """Record in PostgreSQL the outcomes of the entries whose status changed since their
        rows were written; True when a page was full."""
        page = await self.store.draw_log(drop_id, "recorded", PUSH_PAGE)
        if not page.entry_ids:
            return False
        entries = await self.store.entries_of(drop_id, page.entry_ids)
        outcomes = []
        for entry_id in dict.fromkeys(page.entry_ids):
            entry = entry_of(drop_id, entries[entry_id][1])
            outcomes.append((entry_id, entry.status, entry.reservation_id))
        await access_rows.record_outcomes(self.db, drop_id, outcomes)
        await self.store.draw_log_read(drop_id, "recorded", page.end)
        return len(page.entry_ids) == PUSH_PAGE

    # --- both ---------------------------------------------------------------------------

    async def _order_fixed(self, drop_id: str) -> bool:
        """Whether PostgreSQL has the drop's order (asked once per leader and drop)."""
        if drop_id not in self._fixed:
            facts = await access_rows.fairness_facts(self.db, drop_id)
            if facts is not None and facts.order_fixed_at is not None:
                self._fixed.add(drop_id)
        return drop_id in self._fixed

    async def _record_order(self, drop_id: str, queue: bool) -> None:
        """Record the fixed order in PostgreSQL (which reveals the seed), once."""
        ranked = await self.store.ranked(drop_id, queue)
        started = time.perf_counter()
        if await access_rows.record_order(self.db, drop_id, ranked, datetime.now(UTC)):
            log.info(
                "order fixed",
                extra={
                    "drop": drop_id,
                    "entries": len(ranked),
                    "seconds": round(time.perf_counter() - started, 3),
                },
            )
        self._fixed.add(drop_id)

    def _record_entries_later(self, drop_id: str, queue: bool) -> None:
        """Write each ordered entry's audit row, in a task of its own (COPY of up to
        100,000 rows): the drop's admissions, hand-overs and pushes go on meanwhile."""
        if drop_id in self._recorded or drop_id in self._recording:
            return
        self._recording[drop_id] = asyncio.create_task(
            self._record_entries(drop_id, queue), name=f"access-record-{drop_id}"
        )

    def _entries_done(self, drop_id: str) -> bool:
        return drop_id in self._recorded

    async def _record_entries(self, drop_id: str, queue: bool) -> None:
        try:
            if not await access_rows.entries_recorded(self.db, drop_id):
                # The rows carry every outcome up to `covered`: only later changes are
                # recorded over them (a change in between is recorded twice, harmlessly).
                covered = 0 if queue else await self.store.draw_log_end(drop_id)
                rows = await (
                    self.store.queue_order(drop_id) if queue else self.store.draw_order(drop_id)
                )
                labels = {} if queue else await self.drops.size_labels(drop_id)
                entries = [_ordered(row, labels, queue) for row in rows]
                if await access_rows.record_entries(self.db, drop_id, entries) and not queue:
                    await self.store.draw_log_read(drop_id, "recorded", covered)
            self._recorded.add(drop_id)
        except Exception:
            metrics.BACKGROUND_ERRORS.labels(task="access").inc()
            log.warning("could not record a drop's entries", exc_info=True)
        finally:
            del self._recording[drop_id]

    @staticmethod
    def _over(drop: DropDefinition) -> bool:
        now = datetime.now(UTC)
        return drop.cancelled or (drop.ends_at is not None and now >= drop.ends_at)


def _ordered(row: OrderRow, labels: dict[str, str], queue: bool) -> access_rows.OrderedEntry:
    """An audit row: a ticket's, or a draw entry's with its size labels and outcome."""
    if queue:
        return access_rows.OrderedEntry(row.entry_id, row.user_id, row.rank_key, row.position)
    _, status, sizes, hold, _ = row.raw.split("|")
    named = ",".join(labels.get(index, index) for index in sizes.split(",")) if sizes else None
    return access_rows.OrderedEntry(
        row.entry_id,
        row.user_id,
        row.rank_key,
        row.position,
        named,
        {"W": "won", "S": "standby", "L": "lost"}.get(status),
        hold or None,
    )


def _ticket_json(drop_id: str, facts: TicketFacts) -> dict[str, Any]:
    return ticket_of(drop_id, facts).to_wire()
