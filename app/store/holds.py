"""Hold operations: thin typed wrappers over the hold scripts.

Each function runs one script and turns its reply into a small typed result.
Script replies are names, mapped once to `StrEnum`s here; services turn them
into domain errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import orjson
from redis.asyncio import Redis

from app.domain import iso
from app.store.channels import database_of, stock_dirty_channel
from app.store.entries import HoldEntry, parse_entry
from app.store.hold_reads import HoldReads
from app.store.keys import DropKeys, HoldRef, revoked_session
from app.store.scripts import ScriptName, Scripts

__all__ = ["HoldEntry", "HoldStore", "parse_entry"]


class ReserveOutcome(StrEnum):
    OK = "OK"
    REVOKED = "REVOKED"
    DROP_NOT_FOUND = "DROP_NOT_FOUND"
    DROP_NOT_LIVE = "DROP_NOT_LIVE"
    LIMIT_REACHED = "LIMIT_REACHED"
    COOLDOWN = "COOLDOWN"
    SOLD_OUT = "SOLD_OUT"
    SIZE_REQUIRED = "SIZE_REQUIRED"
    UNKNOWN_SIZE = "UNKNOWN_SIZE"
    SIZE_SOLD_OUT = "SIZE_SOLD_OUT"
    NOT_ADMITTED = "NOT_ADMITTED"


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
    REVOKED = "REVOKED"


class AbortOutcome(StrEnum):
    RESTORED = "RESTORED"
    RESTORED_DUE = "RESTORED_DUE"
    NOOP = "NOOP"


class ReleaseReason(StrEnum):
    EXPIRED = "EXPIRED"  # only once the deadline has passed
    CANCELLED = "CANCELLED"
    VOIDED = "VOIDED"  # past its deadline after its stale purchase attempt was voided


@dataclass(frozen=True, slots=True)
class ReserveResult:
    outcome: ReserveOutcome
    expires_at_ms: int = 0
    created_at_ms: int = 0
    available: int = 0
    retry_after_ms: int = 0  # COOLDOWN: how long until this user may reserve here again
    size: str | None = None  # the size held, on a sized drop


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
    claim_id: str = ""  # CLAIMED: the caller's; IN_PROGRESS: the running attempt's
    size: str | None = None  # the size held, on a sized drop
    epoch: int = 0  # the drop's rebuild epoch as the claim read it (drop_rebuild.lua)


def _live_keys(keys: DropKeys, ref: HoldRef) -> list[str]:
    """The first six keys of reserve.lua and release.lua: the drop and the hold's live state."""
    return [
        keys.drop,
        keys.users,
        keys.holds,
        keys.due,
        keys.timer(ref.hold_id),
        keys.user_holds(ref.user_id),
    ]


def _hold_keys(keys: DropKeys, ref: HoldRef) -> list[str]:
    """The eleven keys release.lua takes."""
    return [
        *_live_keys(keys, ref),
        keys.closed,
        keys.closed_at,
        keys.cooldown(ref.user_id),
        keys.sizes,
        keys.hold_sizes,
    ]


class HoldStore(HoldReads):
    """`cooldown_ms` (RESERVE_COOLDOWN_SECONDS): after a user's hold in a drop is cancelled
    by that user or expires, how long that user's next reserve there is refused (0 = off)."""

    def __init__(self, redis: Redis, scripts: Scripts, cooldown_ms: int = 0) -> None:
        self.redis = redis
        self.scripts = scripts
        self.cooldown_ms = cooldown_ms
        self.stock_channel = stock_dirty_channel(database_of(redis))

    def reserve_args(
        self,
        ref: HoldRef,
        ttl_ms: int,
        unchecked_session: str | None = None,
        sizes: Sequence[str] = (),
    ) -> tuple[list[str], list[str | int]]:
        """KEYS and ARGV of reserve.lua (see its header). `sizes`: the labels to try, in order."""
        keys = DropKeys(ref.drop_id)
        revoked = [] if unchecked_session is None else [revoked_session(unchecked_session)]
        return [
            *_live_keys(keys, ref),
            keys.cooldown(ref.user_id),
            keys.sizes,
            keys.hold_sizes,
            keys.q_users,
            keys.q_tix,
            *revoked,
        ], [
            ref.user_id,
            ref.hold_id,
            ttl_ms,
            self.stock_channel,
            ref.drop_id,
            self.cooldown_ms,
            *sizes,
        ]

    async def reserve(
        self,
        ref: HoldRef,
        ttl_ms: int,
        unchecked_session: str | None = None,
        sizes: Sequence[str] = (),
    ) -> ReserveResult:
        """With `unchecked_session`, a signed-out session is refused (REVOKED) in the same call."""
        keys, args = self.reserve_args(ref, ttl_ms, unchecked_session, sizes)
        reply = await self.scripts.run(ScriptName.RESERVE, keys, args)
        outcome = ReserveOutcome(reply[0])
        if outcome is ReserveOutcome.COOLDOWN:
            return ReserveResult(outcome, retry_after_ms=int(reply[1]))
        if outcome is not ReserveOutcome.OK:
            return ReserveResult(outcome)
        size = str(reply[4]) or None
        return ReserveResult(outcome, int(reply[1]), int(reply[2]), int(reply[3]), size=size)

    def release_args(
        self, ref: HoldRef, reason: ReleaseReason, owner: str = ""
    ) -> tuple[list[str], list[str]]:
        """KEYS and ARGV of release.lua; it arms the owner's cooldown when the reason and
        owner call for one (see the script's header)."""
        keys = DropKeys(ref.drop_id)
        return _hold_keys(keys, ref), [
            ref.hold_id,
            reason.value,
            owner,
            self.stock_channel,
            ref.drop_id,
            str(self.cooldown_ms),
        ]

    async def release(self, ref: HoldRef, reason: ReleaseReason, owner: str = "") -> ReleaseResult:
        keys, args = self.release_args(ref, reason, owner)
        return parse_release(await self.scripts.run(ScriptName.RELEASE, keys, args))

    async def release_many(self, refs: list[HoldRef], reason: ReleaseReason) -> list[ReleaseResult]:
        """release.lua for many holds by the system, in one pipelined round trip."""
        if not refs:
            return []
        script = self.scripts.script(ScriptName.RELEASE)
        pipe = self.redis.pipeline(transaction=False)
        for ref in refs:
            hold_keys, args = self.release_args(ref, reason)
            await script(keys=hold_keys, args=args, client=pipe)
        return [parse_release(reply) for reply in await pipe.execute()]

    async def claim(
        self, ref: HoldRef, claim_id: str, timeout_ms: int, unchecked_session: str | None = None
    ) -> ClaimResult:
        """With `unchecked_session`, a signed-out session is refused (REVOKED) in the same call."""
        keys = DropKeys(ref.drop_id)
        revoked = [] if unchecked_session is None else [revoked_session(unchecked_session)]
        reply = await self.scripts.run(
            ScriptName.PURCHASE_CLAIM,
            [
                keys.drop,
                keys.holds,
                keys.due,
                keys.timer(ref.hold_id),
                keys.closed,
                keys.sizes,
                keys.hold_sizes,
                *revoked,
            ],
            [ref.hold_id, ref.user_id, claim_id, timeout_ms],
        )
        outcome = ClaimOutcome(reply[0])
        if len(reply) < 4:
            return ClaimResult(outcome)
        return ClaimResult(
            outcome, int(reply[1]), str(reply[2]), str(reply[3]) or None, int(reply[4])
        )

    async def commit(
        self, ref: HoldRef, buyer_name: str, purchased_at: datetime
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
                keys.timer(ref.hold_id),
                keys.user_holds(ref.user_id),
                keys.closed,
                keys.closed_at,
                keys.buyers,
                keys.sizes,
                keys.hold_sizes,
            ],
            [ref.hold_id, buyer.decode()],
        )
        return str(reply[0]), str(reply[1]) if len(reply) > 1 else ""

    async def abort(self, ref: HoldRef, claim_id: str) -> AbortOutcome:
        """Undo a claim; claim_id '' aborts whatever claim holds it (the sweeper)."""
        keys = DropKeys(ref.drop_id)
        reply = await self.scripts.run(
            ScriptName.PURCHASE_ABORT,
            [keys.drop, keys.holds, keys.due, keys.timer(ref.hold_id)],
            [ref.hold_id, claim_id],
        )
        return AbortOutcome(reply[0])


def parse_release(reply: list[object]) -> ReleaseResult:
    outcome = ReleaseOutcome(str(reply[0]))
    if outcome is ReleaseOutcome.RELEASED:
        return ReleaseResult(outcome, lag_ms=int(str(reply[1])), available=int(str(reply[2])))
    if outcome is ReleaseOutcome.ALREADY:
        return ReleaseResult(outcome, closed_state=str(reply[1]))
    return ReleaseResult(outcome)
