"""Hold operations: thin typed wrappers over the hold scripts.

Each function runs one script and turns its reply into a small typed result.
Script replies are names, mapped once to `StrEnum`s here; services turn them
into domain errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import cast

import orjson
from redis.asyncio import Redis

from app.domain import iso
from app.store.channels import database_of, stock_dirty_channel
from app.store.keys import DropKeys, ReservationRef
from app.store.scripts import ScriptName, Scripts


class ReserveOutcome(StrEnum):
    OK = "OK"
    REVOKED = "REVOKED"
    DROP_NOT_FOUND = "DROP_NOT_FOUND"
    DROP_NOT_LIVE = "DROP_NOT_LIVE"
    LIMIT_REACHED = "LIMIT_REACHED"
    COOLDOWN = "COOLDOWN"
    SOLD_OUT = "SOLD_OUT"


class ReleaseOutcome(StrEnum):
    RELEASED = "RELEASED"
    ALREADY = "ALREADY"
    PURCHASING = "PURCHASING"
    NOT_DUE = "NOT_DUE"
    NOT_FOUND = "NOT_FOUND"


class ClaimOutcome(StrEnum):
    CLAIMED = "CLAIMED"
    IN_PROGRESS = "IN_PROGRESS"
    DUE = "DUE"
    EXPIRED = "EXPIRED"
    CANCELLED = "CANCELLED"
    PURCHASED = "PURCHASED"
    NOT_FOUND = "NOT_FOUND"


class AbortOutcome(StrEnum):
    RESTORED = "RESTORED"
    RESTORED_DUE = "RESTORED_DUE"
    NOOP = "NOOP"


class ReleaseReason(StrEnum):
    EXPIRED = "EXPIRED"  # only once the deadline has passed
    CANCELLED = "CANCELLED"
    VOIDED = "VOIDED"  # a stale purchase claim fenced out by the sweeper


@dataclass(frozen=True, slots=True)
class ReserveResult:
    outcome: ReserveOutcome
    expires_at_ms: int = 0
    created_at_ms: int = 0
    available: int = 0
    retry_after_ms: int = 0  # COOLDOWN: how long until this user may reserve here again


@dataclass(frozen=True, slots=True)
class ReleaseResult:
    outcome: ReleaseOutcome
    closed_state: str = ""
    lag_ms: int = 0
    available: int = 0


@dataclass(frozen=True, slots=True)
class ClaimResult:
    outcome: ClaimOutcome
    expires_at_ms: int = 0


def _hold_keys(keys: DropKeys, ref: ReservationRef) -> list[str]:
    """The nine keys release.lua takes."""
    return [
        keys.drop,
        keys.users,
        keys.holds,
        keys.due,
        keys.timer(ref.reservation_id),
        keys.user_holds(ref.user_id),
        keys.closed,
        keys.closed_at,
        keys.cooldown(ref.user_id),
    ]


class HoldStore:
    """`cooldown_ms` (RESERVE_COOLDOWN_SECONDS): after a user's hold in a drop is cancelled
    by that user or expires, how long that user's next reserve there is refused (0 = off)."""

    def __init__(self, redis: Redis, scripts: Scripts, cooldown_ms: int = 0) -> None:
        self.redis = redis
        self.scripts = scripts
        self.cooldown_ms = cooldown_ms
        self.stock_channel = stock_dirty_channel(database_of(redis))

    def reserve_args(
        self, ref: ReservationRef, ttl_ms: int, revoked_key: str | None = None
    ) -> tuple[list[str], list[str | int]]:
        """KEYS and ARGV of reserve.lua (see its header)."""
        keys = DropKeys(ref.drop_id)
        revoked = [] if revoked_key is None else [revoked_key]
        return [
            keys.drop,
            keys.users,
            keys.holds,
            keys.due,
            keys.timer(ref.reservation_id),
            keys.user_holds(ref.user_id),
            keys.cooldown(ref.user_id),
            *revoked,
        ], [
            ref.user_id,
            ref.reservation_id,
            ttl_ms,
            self.stock_channel,
            ref.drop_id,
            self.cooldown_ms,
        ]

    async def reserve(
        self, ref: ReservationRef, ttl_ms: int, revoked_key: str | None = None
    ) -> ReserveResult:
        """With `revoked_key`, a signed-out session is refused (REVOKED) in the same call."""
        keys, args = self.reserve_args(ref, ttl_ms, revoked_key)
        reply = await self.scripts.run(ScriptName.RESERVE, keys, args)
        outcome = ReserveOutcome(reply[0])
        if outcome is ReserveOutcome.COOLDOWN:
            return ReserveResult(outcome, retry_after_ms=int(reply[1]))
        if outcome is not ReserveOutcome.OK:
            return ReserveResult(outcome)
        return ReserveResult(outcome, int(reply[1]), int(reply[2]), int(reply[3]))

    def release_args(
        self, ref: ReservationRef, reason: ReleaseReason, owner: str = ""
    ) -> tuple[list[str], list[str]]:
        """KEYS and ARGV of release.lua; it arms the owner's cooldown when the reason and
        owner call for one (see the script's header)."""
        keys = DropKeys(ref.drop_id)
        return _hold_keys(keys, ref), [
            ref.reservation_id,
            reason.value,
            owner,
            self.stock_channel,
            ref.drop_id,
            str(self.cooldown_ms),
        ]

    async def release(
        self, ref: ReservationRef, reason: ReleaseReason, owner: str = ""
    ) -> ReleaseResult:
        keys, args = self.release_args(ref, reason, owner)
        return parse_release(await self.scripts.run(ScriptName.RELEASE, keys, args))

    async def release_many(
        self, refs: list[ReservationRef], reason: ReleaseReason
    ) -> list[ReleaseResult]:
        """release.lua for many holds by the system, in one pipelined round trip."""
        if not refs:
            return []
        script = self.scripts.script(ScriptName.RELEASE)
        pipe = self.redis.pipeline(transaction=False)
        for ref in refs:
            hold_keys, args = self.release_args(ref, reason)
            await script(keys=hold_keys, args=args, client=pipe)
        return [parse_release(reply) for reply in await pipe.execute()]

    async def claim(self, ref: ReservationRef, claim_id: str, timeout_ms: int) -> ClaimResult:
        keys = DropKeys(ref.drop_id)
        reply = await self.scripts.run(
            ScriptName.PURCHASE_CLAIM,
            [keys.drop, keys.holds, keys.due, keys.timer(ref.reservation_id), keys.closed],
            [ref.reservation_id, ref.user_id, claim_id, timeout_ms],
        )
        outcome = ClaimOutcome(reply[0])
        expires = int(reply[1]) if len(reply) > 1 else 0
        return ClaimResult(outcome, expires)

    async def commit(
        self, ref: ReservationRef, buyer_name: str, purchased_at: datetime
    ) -> tuple[str, str]:
        """Returns ('COMMITTED', '') or ('NOOP', closed state or '')."""
        keys = DropKeys(ref.drop_id)
        buyer = orjson.dumps({"displayName": buyer_name, "purchasedAt": iso(purchased_at)})
        reply = await self.scripts.run(
            ScriptName.PURCHASE_COMMIT,
            [
                keys.drop,
                keys.holds,
                keys.due,
                keys.timer(ref.reservation_id),
                keys.user_holds(ref.user_id),
                keys.closed,
                keys.closed_at,
                keys.buyers,
            ],
            [ref.reservation_id, buyer.decode()],
        )
        return str(reply[0]), str(reply[1]) if len(reply) > 1 else ""

    async def abort(self, ref: ReservationRef, claim_id: str) -> AbortOutcome:
        """Undo a claim; claim_id '' aborts whatever claim holds it (the sweeper)."""
        keys = DropKeys(ref.drop_id)
        reply = await self.scripts.run(
            ScriptName.PURCHASE_ABORT,
            [keys.drop, keys.holds, keys.due, keys.timer(ref.reservation_id)],
            [ref.reservation_id, claim_id],
        )
        return AbortOutcome(reply[0])

    async def is_claimed(self, ref: ReservationRef) -> bool:
        """Whether the hold is still PURCHASING in Redis (it is lost if Redis was emptied)."""
        entry = await self.redis.hget(DropKeys(ref.drop_id).holds, ref.reservation_id)
        return isinstance(entry, str) and entry.startswith("PURCHASING|")

    async def live_holds_of(self, drop_ids: list[str], user_id: str) -> list[tuple[str, str]]:
        """(reservation id, raw hold entry) of one user's live holds, in two round trips."""
        if not drop_ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for drop_id in drop_ids:
            pipe.smembers(DropKeys(drop_id).user_holds(user_id))
        id_sets = cast(list[set[str]], await pipe.execute())
        wanted = [(d, sorted(ids)) for d, ids in zip(drop_ids, id_sets, strict=True) if ids]
        if not wanted:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for drop_id, ids in wanted:
            pipe.hmget(DropKeys(drop_id).holds, ids)
        entries = cast(list[list[str | None]], await pipe.execute())
        return [
            (rid, entry)
            for (_, ids), values in zip(wanted, entries, strict=True)
            for rid, entry in zip(ids, values, strict=True)
            if entry
        ]

    async def closed_entry(self, ref: ReservationRef) -> str | None:
        value = await self.redis.hget(DropKeys(ref.drop_id).closed, ref.reservation_id)
        return cast(str | None, value)


def parse_release(reply: list[object]) -> ReleaseResult:
    outcome = ReleaseOutcome(str(reply[0]))
    if outcome is ReleaseOutcome.RELEASED:
        return ReleaseResult(outcome, lag_ms=int(str(reply[1])), available=int(str(reply[2])))
    if outcome is ReleaseOutcome.ALREADY:
        return ReleaseResult(outcome, closed_state=str(reply[1]))
    return ReleaseResult(outcome)


@dataclass(frozen=True, slots=True)
class HoldEntry:
    state: str
    user_id: str
    expires_at_ms: int
    created_at_ms: int
    extra: str  # claim id while PURCHASING, closed time (ms) once ended


def parse_entry(raw: str) -> HoldEntry:
    state, user_id, expires, created, extra = raw.split("|", 4)
    return HoldEntry(state, user_id, int(expires), int(created), extra)
