"""Fair access: the waiting room (queue) and the raffle (draw) of a drop, and its
fairness record.

Joining, entering and reading go to Redis alone (one script each, app/store/access.py);
the order is the published rule of app/fairness.py, computed from a seed that is secret
until the order is fixed and then read from PostgreSQL, the system of record
(app/db/access.py). The access leader (app/background/access_leader.py) admits, draws,
hands units over and records the order.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import asyncpg

from app import fairness
from app.db import access as access_rows
from app.db.session import Database
from app.domain import Access, from_ms, iso
from app.errors import (
    SIGNED_OUT,
    AccessModeMismatch,
    DropNotFound,
    DropNotLive,
    EntriesClosed,
    NotEntered,
    NotInQueue,
    OrderNotFixed,
    SizeRequired,
    Unauthorized,
    UnknownSize,
)
from app.services.drops import DropService
from app.store import keys
from app.store.access import AccessReply, AccessStore, EntryFacts, QueueStats, TicketFacts

_REFUSALS = {
    AccessReply.DROP_NOT_FOUND: DropNotFound,
    AccessReply.ACCESS_MODE_MISMATCH: AccessModeMismatch,
    AccessReply.DROP_NOT_LIVE: DropNotLive,
    AccessReply.NOT_IN_QUEUE: NotInQueue,
    AccessReply.NOT_ENTERED: NotEntered,
    AccessReply.SIZE_REQUIRED: SizeRequired,
    AccessReply.UNKNOWN_SIZE: UnknownSize,
    AccessReply.ENTRIES_CLOSED: EntriesClosed,
}

# What a store call read of a ticket or an entry.
Facts = TypeVar("Facts", TicketFacts, EntryFacts)

SETTLE_STEP = 500  # entries one draw_settle.lua call may change

ENTRY_STATUS = {"E": "entered", "W": "won", "S": "standby", "L": "lost"}


@dataclass(frozen=True, slots=True)
class Ticket:
    entry_id: str
    drop_id: str
    status: str  # waiting, admitted, expired, closed
    position: int | None
    ahead: int | None
    estimated_wait_seconds: int | None
    admitted_at: datetime | None
    pass_expires_at: datetime | None

    def to_wire(self) -> dict[str, Any]:
        """The wire's `Ticket`: what /queue/me answers and `access_update` carries."""
        return {
            "entryId": self.entry_id,
            "dropId": self.drop_id,
            "status": self.status,
            "position": self.position,
            "ahead": self.ahead,
            "estimatedWaitSeconds": self.estimated_wait_seconds,
            "admittedAt": iso(self.admitted_at) if self.admitted_at else None,
            "passExpiresAt": iso(self.pass_expires_at) if self.pass_expires_at else None,
        }


@dataclass(frozen=True, slots=True)
class Entry:
    entry_id: str
    drop_id: str
    status: str  # entered, won, standby, lost
    size: str | None
    fallback_sizes: tuple[str, ...]
    position: int | None
    reservation_id: str | None

    def to_wire(self) -> dict[str, Any]:
        """The wire's `Entry`: what /entries/me answers and `access_update` carries."""
        return {
            "entryId": self.entry_id,
            "dropId": self.drop_id,
            "status": self.status,
            "size": self.size,
            "fallbackSizes": list(self.fallback_sizes),
            "position": self.position,
            "reservationId": self.reservation_id,
        }


@dataclass(frozen=True, slots=True)
class QueueState:
    drop_id: str
    waiting: int
    admitted: int
    serving_position: int
    admit_per_minute: int
    pass_seconds: int


@dataclass(frozen=True, slots=True)
class FairnessRecord:
    drop_id: str
    access: str
    seed_commitment: str
    seed: str | None  # revealed once the order is fixed
    entries: int
    order_fixed_at: datetime | None


def ticket_of(drop_id: str, facts: TicketFacts) -> Ticket:
    """The wire's Ticket from what Redis read in one step."""
    admitted_at = pass_end = None
    if facts.admitted_at_ms:
        admitted_at = from_ms(facts.admitted_at_ms)
        pass_end = from_ms(facts.admitted_at_ms + facts.pass_ms)
        status = "admitted" if facts.now_ms < facts.admitted_at_ms + facts.pass_ms else "expired"
    else:
        status = "closed" if facts.closed else "waiting"
    ahead = wait = None
    if facts.position is not None:
        # Positions are admitted in order: every smaller position not yet served waits.
        ahead = max(facts.position - 1 - facts.served, 0)
        wait = math.ceil(ahead * 60 / facts.admit_per_minute)
    return Ticket(
        entry_id=facts.entry_id,
        drop_id=drop_id,
        status=status,
        position=facts.position,
        ahead=ahead,
        estimated_wait_seconds=wait,
        admitted_at=admitted_at,
        pass_expires_at=pass_end,
    )


def entry_of(drop_id: str, facts: EntryFacts) -> Entry:
    return Entry(
        entry_id=facts.entry_id,
        drop_id=drop_id,
        status=ENTRY_STATUS[facts.status],
        size=facts.sizes[0] if facts.sizes else None,
        fallback_sizes=facts.sizes[1:],
        position=facts.position,
        reservation_id=facts.reservation_id if facts.status == "W" else None,
    )


def _refuse(outcome: AccessReply) -> None:
    if outcome is AccessReply.REVOKED:
        raise Unauthorized(SIGNED_OUT)
    refusal = _REFUSALS.get(outcome)
    if refusal is not None:
        raise refusal()


class AccessService:
    def __init__(self, db: Database, drops: DropService, store: AccessStore) -> None:
        self.db = db
        self.drops = drops
        self.store = store
        # A drop's access mode and seed never change: each process reads them once.
        self._seeds: dict[str, tuple[Access, bytes | None]] = {}

    async def _access(self, drop_id: str) -> tuple[Access, bytes | None]:
        known = self._seeds.get(drop_id)
        if known is None:
            view = await self.drops.get(drop_id)  # 404 for an unknown or malformed id
            settings = view.definition.access
            seed = bytes.fromhex(settings.seed) if settings.seed else None
            known = self._seeds[drop_id] = (settings.access, seed)
        return known

    async def _seed_of(self, drop_id: str, mode: Access) -> bytes:
        access, seed = await self._access(drop_id)
        if access is not mode or seed is None:
            raise AccessModeMismatch(f"This drop's access is {access.value!r}")
        return seed

    async def _answer(
        self, drop_id: str, call: Callable[[], Awaitable[tuple[AccessReply, Facts | None]]]
    ) -> tuple[AccessReply, Facts]:
        """One store call's outcome and facts, a refusal raised as its error. When Redis
        lacks the drop (a flush), the drop is rebuilt once and the call made again."""
        outcome, facts = await call()
        if outcome is AccessReply.DROP_NOT_FOUND and await self.drops.ensure_mirrored(drop_id):
            outcome, facts = await call()
        _refuse(outcome)
        assert facts is not None
        return outcome, facts

    # --- queue ----------------------------------------------------------------

    async def join(
        self, user_id: str, drop_id: str, unchecked_session: str | None = None
    ) -> tuple[Ticket, bool]:
        """The caller's ticket, and whether this call created it. `unchecked_session`: the
        caller's session, not yet checked for a sign-out; the script checks it."""
        seed = await self._seed_of(drop_id, Access.QUEUE)
        entry_id = fairness.new_entry_id()
        rank = fairness.rank_key(seed, entry_id)
        outcome, facts = await self._answer(
            drop_id, lambda: self.store.join(drop_id, user_id, entry_id, rank, unchecked_session)
        )
        return ticket_of(drop_id, facts), outcome is AccessReply.CREATED

    async def ticket(
        self, user_id: str, drop_id: str, unchecked_session: str | None = None
    ) -> Ticket:
        if not keys.DROP_ID_RE.match(drop_id):
            raise DropNotFound()
        _, facts = await self._answer(
            drop_id, lambda: self.store.ticket(drop_id, user_id, unchecked_session)
        )
        return ticket_of(drop_id, facts)

    async def queue_state(self, drop_id: str) -> QueueState:
        view = await self.drops.get(drop_id)
        settings = view.definition.access
        if settings.access is not Access.QUEUE:
            raise AccessModeMismatch("This drop has no queue")
        stats: QueueStats = await self.store.queue_stats(drop_id)
        assert settings.admit_per_minute is not None
        assert settings.pass_seconds is not None
        return QueueState(
            drop_id=drop_id,
            waiting=stats.waiting,
            admitted=stats.admitted,
            serving_position=stats.admitted,
            admit_per_minute=settings.admit_per_minute,
            pass_seconds=settings.pass_seconds,
        )

    # --- draw -------------------------------------------------------------------

    async def enter(
        self,
        user_id: str,
        drop_id: str,
        sizes: Sequence[str],
        unchecked_session: str | None = None,
    ) -> tuple[Entry, bool]:
        seed = await self._seed_of(drop_id, Access.DRAW)
        entry_id = fairness.new_entry_id()
        rank = fairness.rank_key(seed, entry_id)
        outcome, facts = await self._answer(
            drop_id,
            lambda: self.store.enter(drop_id, user_id, entry_id, rank, sizes, unchecked_session),
        )
        return entry_of(drop_id, facts), outcome is AccessReply.CREATED

    async def entry(
        self, user_id: str, drop_id: str, unchecked_session: str | None = None
    ) -> Entry:
        if not keys.DROP_ID_RE.match(drop_id):
            raise DropNotFound()
        _, facts = await self._answer(
            drop_id, lambda: self.store.entry(drop_id, user_id, unchecked_session)
        )
        return entry_of(drop_id, facts)

    async def released(self, drop_id: str) -> None:
        """A hold of `drop_id` was cancelled: on a draw drop, its unit goes to the next
        standby entry now (the access leader would, within its tick)."""
        access, _ = await self._access(drop_id)
        if access is Access.DRAW:
            more = True
            while more:
                _, _, more = await self.store.settle(drop_id, SETTLE_STEP)

    # --- the fairness record ------------------------------------------------------

    async def fairness(self, drop_id: str) -> FairnessRecord:
        facts = await self._fairness_facts(drop_id)
        assert facts.seed is not None
        fixed = facts.order_fixed_at is not None
        return FairnessRecord(
            drop_id=drop_id,
            access=facts.access,
            seed_commitment=fairness.commitment(facts.seed),
            seed=facts.seed.hex() if fixed else None,
            entries=facts.ordered_entries or 0 if fixed else 0,
            order_fixed_at=facts.order_fixed_at,
        )

    async def fairness_entries(self, drop_id: str) -> list[asyncpg.Record]:
        facts = await self._fairness_facts(drop_id)
        if facts.order_fixed_at is None:
            raise OrderNotFixed("The order is fixed at the start (queue) or at closesAt (draw)")
        return await access_rows.ordered_entries(self.db, drop_id)

    async def _fairness_facts(self, drop_id: str) -> access_rows.FairnessFacts:
        if not keys.DROP_ID_RE.match(drop_id):
            raise DropNotFound()
        facts = await access_rows.fairness_facts(self.db, drop_id)
        if facts is None or facts.access == Access.OPEN or facts.seed is None:
            raise DropNotFound()
        return facts
