"""Queue tickets and draw entries in Redis: thin typed wrappers over their scripts.

Every change is one Lua script inside the drop's hash tag (lua/queue_*.lua,
lua/draw_*.lua); reads that need a position are scripts too, so a ticket's position and
what is ahead of it come back in one round trip.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from redis.asyncio import Redis

from app.store.channels import database_of, stock_dirty_channel
from app.store.keys import ACCESS_DROPS, DropKeys, revoked_session
from app.store.scripts import ScriptName, Scripts

ORDER_READ_CHUNK = 5000  # ordered entries read per round trip when the order is recorded
# The readers of each change log (lua/change_log.lua): the queue's pushes; the draw's
# pushes and its outcome records in PostgreSQL.
QUEUE_LOG_READERS = ("pushed",)
DRAW_LOG_READERS = ("pushed", "recorded")


class AccessReply(StrEnum):
    REVOKED = "REVOKED"
    CREATED = "CREATED"
    EXISTS = "EXISTS"
    OK = "OK"
    DROP_NOT_FOUND = "DROP_NOT_FOUND"
    ACCESS_MODE_MISMATCH = "ACCESS_MODE_MISMATCH"
    DROP_NOT_LIVE = "DROP_NOT_LIVE"
    NOT_IN_QUEUE = "NOT_IN_QUEUE"
    NOT_ENTERED = "NOT_ENTERED"
    SIZE_REQUIRED = "SIZE_REQUIRED"
    UNKNOWN_SIZE = "UNKNOWN_SIZE"
    ENTRIES_CLOSED = "ENTRIES_CLOSED"


@dataclass(frozen=True, slots=True)
class TicketFacts:
    """What Redis knows of one ticket, read in one step (see ticket_reply in access_lib.lua)."""

    entry_id: str
    position: int | None  # None in the pre-queue before startsAt
    served: int  # the highest position admitted so far
    admitted_at_ms: int  # 0 while waiting
    pass_ms: int
    admit_per_minute: int
    closed: bool  # the drop is sold out, ended or cancelled
    now_ms: int


@dataclass(frozen=True, slots=True)
class EntryFacts:
    """One draw entry (see entry_reply in access_lib.lua)."""

    entry_id: str
    status: str  # E, W, S or L
    reservation_id: str | None
    position: int | None  # None until drawn
    sizes: tuple[str, ...]  # labels, in the order asked


@dataclass(frozen=True, slots=True)
class QueueStats:
    waiting: int
    admitted: int  # = the highest position admitted (positions are admitted in order)


@dataclass(frozen=True, slots=True)
class Admission:
    """One queue_admit.lua call: tickets admitted and passes ended, as (entry, user)."""

    state: str  # NOT_STARTED, CLOSED, OPEN
    now_ms: int
    served: int
    admitted: list[tuple[str, str]]
    ended: list[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class DrawStep:
    state: str  # NOT_YET, DRAWING, DONE
    drawn: int = 0
    entries: int = 0
    drawn_at_ms: int = 0


@dataclass(frozen=True, slots=True)
class LogPage:
    """A reader's next entries of a change log (lua/change_log.lua)."""

    start: int  # the absolute index of the first entry: the reader's place
    entry_ids: list[str]

    @property
    def end(self) -> int:
        """The index to mark read once the page is dealt with: absolute, not a count, so
        two leaders that both deal with the page move the reader past it once."""
        return self.start + len(self.entry_ids)


@dataclass(frozen=True, slots=True)
class OrderRow:
    """One entry of a fixed order, as Redis has it (for the PostgreSQL record)."""

    entry_id: str
    user_id: str
    rank_key: str
    position: int
    raw: str  # the ticket or entry value (see access_lib.lua)


def _revoked(session: str | None) -> list[str]:
    """The optional last KEY of the user scripts: the caller's signed-out marker, so the
    sign-out check costs no round trip of its own (None: checked already)."""
    return [] if session is None else [revoked_session(session)]


def _pairs(values: Sequence[Any]) -> list[tuple[str, str]]:
    return [(str(values[i]), str(values[i + 1])) for i in range(0, len(values), 2)]


def _ticket(reply: Sequence[Any]) -> TicketFacts:
    entry_id, position, served, admitted, pass_ms, rate, closed, now = reply
    return TicketFacts(
        entry_id=str(entry_id),
        position=None if int(position) < 0 else int(position),
        served=int(served),
        admitted_at_ms=int(admitted),
        pass_ms=int(pass_ms),
        admit_per_minute=int(rate),
        closed=int(closed) == 1,
        now_ms=int(now),
    )


def _entry(reply: Sequence[Any]) -> EntryFacts:
    entry_id, status, hold, position, *labels = reply
    return EntryFacts(
        entry_id=str(entry_id),
        status=str(status),
        reservation_id=str(hold) or None,
        position=int(position) or None,
        sizes=tuple(str(label) for label in labels),
    )


class AccessStore:
    def __init__(self, redis: Redis, scripts: Scripts) -> None:
        self.redis = redis
        self.scripts = scripts
        self.stock_channel = stock_dirty_channel(database_of(redis))

    # --- queue ----------------------------------------------------------------

    @staticmethod
    def _queue_keys(drop_id: str) -> list[str]:
        k = DropKeys(drop_id)
        return [k.drop, k.holds, k.q, k.q_users, k.q_tix, k.q_pre, k.q_late]

    async def join(
        self,
        drop_id: str,
        user_id: str,
        entry_id: str,
        rank_key: str,
        unchecked_session: str | None = None,
    ) -> tuple[AccessReply, TicketFacts | None]:
        reply = await self.scripts.run(
            ScriptName.QUEUE_JOIN,
            [*self._queue_keys(drop_id), *_revoked(unchecked_session)],
            [user_id, entry_id, rank_key],
        )
        outcome = AccessReply(reply[0])
        return outcome, _ticket(reply[1:]) if len(reply) > 1 else None

    async def ticket(
        self, drop_id: str, user_id: str, unchecked_session: str | None = None
    ) -> tuple[AccessReply, TicketFacts | None]:
        reply = await self.scripts.run(
            ScriptName.QUEUE_TICKET,
            [*self._queue_keys(drop_id)[:6], *_revoked(unchecked_session)],
            [user_id],
        )
        outcome = AccessReply(reply[0])
        return outcome, _ticket(reply[1:]) if len(reply) > 1 else None

    async def queue_stats(self, drop_id: str) -> QueueStats:
        k = DropKeys(drop_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hmget(k.q, ["served", "late"])
        pipe.zcard(k.q_pre)
        (served, late), pre = await pipe.execute()
        admitted = int(served or 0)
        return QueueStats(waiting=pre + int(late or 0) - admitted, admitted=admitted)

    async def admit(self, drop_id: str, most: int) -> Admission:
        k = DropKeys(drop_id)
        reply = await self.scripts.run(
            ScriptName.QUEUE_ADMIT,
            [k.drop, k.holds, k.q, k.q_tix, k.q_pre, k.q_late, k.q_passes, k.q_changes],
            [most],
        )
        state, now, served, count = str(reply[0]), int(reply[1]), int(reply[2]), int(reply[3])
        admitted = _pairs(reply[4 : 4 + 2 * count])
        rest = reply[4 + 2 * count :]
        return Admission(state, now, served, admitted, _pairs(rest[1 : 1 + 2 * int(rest[0])]))

    async def queue_order(self, drop_id: str) -> list[OrderRow]:
        """The pre-queue in its fixed order (positions 1..n), with each ticket's owner."""
        k = DropKeys(drop_id)
        return await self._order(k.q_pre, k.q_tix)

    # --- draw -------------------------------------------------------------------

    async def enter(
        self,
        drop_id: str,
        user_id: str,
        entry_id: str,
        rank_key: str,
        sizes: Sequence[str],
        unchecked_session: str | None = None,
    ) -> tuple[AccessReply, EntryFacts | None]:
        k = DropKeys(drop_id)
        reply = await self.scripts.run(
            ScriptName.DRAW_ENTER,
            [
                k.drop,
                k.sizes,
                k.draw_users,
                k.draw_entries,
                k.draw_order,
                *_revoked(unchecked_session),
            ],
            [user_id, entry_id, rank_key, *sizes],
        )
        outcome = AccessReply(reply[0])
        return outcome, _entry(reply[1:]) if len(reply) > 1 else None

    async def entry(
        self, drop_id: str, user_id: str, unchecked_session: str | None = None
    ) -> tuple[AccessReply, EntryFacts | None]:
        k = DropKeys(drop_id)
        reply = await self.scripts.run(
            ScriptName.DRAW_ENTRY,
            [k.drop, k.sizes, k.draw_users, k.draw_entries, *_revoked(unchecked_session)],
            [user_id],
        )
        outcome = AccessReply(reply[0])
        return outcome, _entry(reply[1:]) if len(reply) > 1 else None

    async def entries_of(
        self, drop_id: str, entry_ids: Sequence[str]
    ) -> dict[str, tuple[str, EntryFacts]]:
        """Several entries by id, each with its user (for pushes after a change), in one
        round trip."""
        if not entry_ids:
            return {}
        k = DropKeys(drop_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hmget(k.draw_entries, list(entry_ids))
        pipe.hgetall(k.sizes)
        raw, sizes = await pipe.execute()
        found: dict[str, tuple[str, EntryFacts]] = {}
        for entry_id, value in zip(entry_ids, raw, strict=True):
            if value is None:
                continue
            user, status, indexes, hold, position = str(value).split("|")
            labels = tuple(sizes.get(f"l:{i}", "") for i in indexes.split(",") if i)
            found[entry_id] = (
                user,
                EntryFacts(entry_id, status, hold or None, int(position) or None, labels),
            )
        return found

    def _draw_keys(self, drop_id: str) -> list[str]:
        k = DropKeys(drop_id)
        return [
            k.drop,
            k.holds,
            k.users,
            k.due,
            k.hold_sizes,
            k.sizes,
            k.draw,
            k.draw_entries,
            k.draw_order,
            k.draw_changes,
        ]

    async def draw(self, drop_id: str, budget: int) -> DrawStep:
        """One draw_run.lua call, of about `budget` Redis commands' work."""
        reply = await self.scripts.run(
            ScriptName.DRAW_RUN,
            self._draw_keys(drop_id),
            [budget, self.stock_channel, drop_id],
        )
        if reply[0] == "NOT_YET":
            return DrawStep("NOT_YET")
        return DrawStep(str(reply[0]), int(reply[1]), int(reply[2]), int(reply[3]))

    async def build_standby(self, drop_id: str, budget: int) -> str:
        """One draw_standby.lua call, of about `budget` Redis commands' work: 'NOT_DRAWN',
        'BUILDING' or 'BUILT'."""
        reply = await self.scripts.run(
            ScriptName.DRAW_STANDBY, self._draw_keys(drop_id), [budget, drop_id]
        )
        return str(reply[0])

    async def settle(self, drop_id: str, most: int) -> tuple[bool, int, bool]:
        """(drawn yet, entries changed, more work left) of one draw_settle.lua call."""
        reply = await self.scripts.run(
            ScriptName.DRAW_SETTLE, self._draw_keys(drop_id), [most, self.stock_channel, drop_id]
        )
        if reply[0] == "NOT_DRAWN":
            return False, 0, False
        return True, int(reply[1]), int(reply[2]) == 1

    async def ticket_owners(self, drop_id: str, entry_ids: Sequence[str]) -> list[str | None]:
        """The user of each queue ticket (None for an unknown id)."""
        if not entry_ids:
            return []
        found = await self.redis.hmget(DropKeys(drop_id).q_tix, list(entry_ids))
        return [None if value is None else str(value).split("|", 1)[0] for value in found]

    async def waiting_users(self, drop_id: str, cursor: int, count: int) -> tuple[int, list[str]]:
        """A page of the queue's users (HSCAN of user -> entry): (next cursor, user ids)."""
        cursor, page = await self.redis.hscan(DropKeys(drop_id).q_users, cursor, count=count)
        return int(cursor), [str(user) for user in page]

    async def draw_order(self, drop_id: str) -> list[OrderRow]:
        k = DropKeys(drop_id)
        return await self._order(k.draw_order, k.draw_entries)

    async def ranked(self, drop_id: str, queue: bool) -> list[tuple[str, str]]:
        """The queue's pre-queue (or the draw's entries) in rank order: (entry id, rank key).
        Only the sorted set is read: what the fairness record needs, and nothing more."""
        k = DropKeys(drop_id)
        ranked: list[tuple[str, str]] = []
        async for _, members in self._ranked_chunks(k.q_pre if queue else k.draw_order):
            ranked.extend((member[64:], member[:64]) for member in members)
        return ranked

    async def _order(self, order_key: str, values_key: str) -> list[OrderRow]:
        """Each ranked entry with its owner and value (ticket or entry), for the audit rows."""
        rows: list[OrderRow] = []
        async for first, members in self._ranked_chunks(order_key):
            ids = [member[64:] for member in members]
            values = await self.redis.hmget(values_key, ids) if ids else []
            for offset, (member, entry_id, value) in enumerate(
                zip(members, ids, values, strict=True)
            ):
                raw = str(value)
                rows.append(
                    OrderRow(entry_id, raw.split("|", 1)[0], member[:64], first + offset + 1, raw)
                )
        return rows

    async def _ranked_chunks(self, order_key: str) -> AsyncIterator[tuple[int, list[str]]]:
        """A rank-ordered set's members (rank key + entry id), ORDER_READ_CHUNK a round
        trip, each chunk with the 0-based rank of its first member."""
        total = int(await self.redis.zcard(order_key))
        for first in range(0, total, ORDER_READ_CHUNK):
            members = await self.redis.zrange(order_key, first, first + ORDER_READ_CHUNK - 1)
            yield first, [str(member) for member in members]

    # --- the change logs -----------------------------------------------------------

    async def _log_step(
        self, meta: str, log: str, readers: Sequence[str], reader: str, dealt: int, most: int
    ) -> LogPage:
        """One change_log.lua call: `reader` has dealt with every entry before absolute
        index `dealt`; the log is trimmed behind every reader, and up to `most` entries
        from the reader's place are read, in the same step."""
        reply = await self.scripts.run(
            ScriptName.CHANGE_LOG, [meta, log], [reader, dealt, most, *readers]
        )
        return LogPage(int(reply[0]), [str(entry_id) for entry_id in reply[1:]])

    async def queue_log(self, drop_id: str, most: int) -> LogPage:
        """Queue tickets admitted or whose pass ended, oldest first (queue_admit.lua appends
        them to q:changes); kept until `queue_log_read`, so a leader that dies before
        pushing them leaves them to the next."""
        k = DropKeys(drop_id)
        return await self._log_step(k.q, k.q_changes, QUEUE_LOG_READERS, "pushed", 0, most)

    async def queue_log_read(self, drop_id: str, to: int) -> None:
        """The queue's changes before absolute index `to` are pushed."""
        k = DropKeys(drop_id)
        await self._log_step(k.q, k.q_changes, QUEUE_LOG_READERS, "pushed", to, 0)

    async def draw_log(self, drop_id: str, reader: str, most: int) -> LogPage:
        """The next draw entries whose status changed, for one of the log's two readers:
        'pushed' (access_update) or 'recorded' (PostgreSQL's outcomes). The scripts append
        to e:changes; each reader keeps its place in the draw's hash, so each reads every
        change at least once, across failovers, at its own pace."""
        k = DropKeys(drop_id)
        return await self._log_step(k.draw, k.draw_changes, DRAW_LOG_READERS, reader, 0, most)

    async def draw_log_end(self, drop_id: str) -> int:
        """The absolute index just past the draw's last change so far."""
        k = DropKeys(drop_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hget(k.draw, "log_base")
        pipe.llen(k.draw_changes)
        base, length = await pipe.execute()
        return int(base or 0) + int(length)

    async def draw_log_read(self, drop_id: str, reader: str, to: int) -> None:
        """`reader` has dealt with (or needs nothing of) every change before absolute index
        `to`; the list keeps only what either reader has yet to read."""
        k = DropKeys(drop_id)
        await self._log_step(k.draw, k.draw_changes, DRAW_LOG_READERS, reader, to, 0)

    # --- the leader's work list -------------------------------------------------

    async def tend(self, drop_id: str) -> None:
        """Put a queue or draw drop on the access leader's list."""
        await self.redis.sadd(ACCESS_DROPS, drop_id)

    async def tended(self) -> list[str]:
        return sorted(str(d) for d in await self.redis.smembers(ACCESS_DROPS))

    async def done_with(self, drop_id: str) -> None:
        await self.redis.srem(ACCESS_DROPS, drop_id)
