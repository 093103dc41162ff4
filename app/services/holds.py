"""Reserve, purchase, cancel: the use cases of a hold.

Purchase is crash-safe across the two stores (see docs/ARCHITECTURE.md):
  1. claim in Redis (ACTIVE -> PURCHASING, timer stopped, claim deadline in `due`);
  2. one PostgreSQL statement, in its own transaction, records the attempt and the
     purchase, unless the drop was rebuilt since the claim (app/db/sales.py);
  3. commit in Redis (hold leaves the live set, sale counted).
A PostgreSQL failure known to have written nothing aborts the claim (the hold
is ACTIVE again with its remaining time). A failure with an unknown outcome (the
statement sent, its connection lost, and a second send unanswered too) leaves the
claim: a retry continues the same attempt (PostgreSQL records it at most once), and an
attempt nobody finishes is settled by the sweeper after the claim timeout: committed
if PostgreSQL has the purchase, else voided there and the hold is ACTIVE again until
its own deadline.

Redis restarted from an older copy (a snapshot, or an append-only file missing its
last second) can show a hold as ACTIVE, or ended, that PostgreSQL knows was bought:
PostgreSQL wins. Such a hold is committed, never cancelled or expired, and a
purchase of it answers the recorded purchase.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from app import metrics, reserve_tally
from app.config import Settings
from app.db import purchases as purchase_rows
from app.db import sales
from app.db.models import Purchase
from app.db.sales import SaleOutcome
from app.db.session import Database
from app.domain import from_ms
from app.errors import (
    SIGNED_OUT,
    Cooldown,
    DropNotFound,
    DropNotLive,
    HoldCancelled,
    HoldExpired,
    HoldNotFound,
    HoldPurchased,
    LimitReached,
    NotAdmitted,
    ServiceUnavailable,
    SizeRequired,
    SizeSoldOut,
    SoldOut,
    Unauthorized,
    UnknownSize,
)
from app.store import keys
from app.store.client import reloaded_hold
from app.store.holds import (
    AbortOutcome,
    ClaimOutcome,
    HoldStore,
    ReleaseOutcome,
    ReleaseReason,
    ReserveOutcome,
    parse_entry,
)


@dataclass(frozen=True, slots=True)
class Hold:
    id: str
    drop_id: str
    status: str
    expires_at: datetime
    created_at: datetime
    size: str | None = None


@dataclass(frozen=True, slots=True)
class PurchaseResult:
    purchase: Purchase
    created: bool


ATTEMPTS = 2  # a purchase whose attempt was voided (it ran past the claim timeout) tries again

_REFUSALS = {
    ReserveOutcome.DROP_NOT_LIVE: DropNotLive,
    ReserveOutcome.LIMIT_REACHED: LimitReached,
    ReserveOutcome.SOLD_OUT: SoldOut,
    ReserveOutcome.SIZE_REQUIRED: SizeRequired,
    ReserveOutcome.UNKNOWN_SIZE: UnknownSize,
    ReserveOutcome.SIZE_SOLD_OUT: SizeSoldOut,
    ReserveOutcome.NOT_ADMITTED: NotAdmitted,
}


class HoldService:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        hold_store: HoldStore,
        ensure_mirrored: Callable[[str], Awaitable[bool]],
    ) -> None:
        self.settings = settings
        self.db = db
        self.hold_store = hold_store
        self.ensure_mirrored = ensure_mirrored
        self.ttl_ms = settings.reservation_ttl_seconds * 1000
        self.claim_timeout_ms = settings.purchase_claim_timeout_seconds * 1000
        # Test hook: awaited at each failpoint of a purchase (after_claim, statement_sent:
        # the sale statement on its way, its answer not read, after_record) to simulate a
        # crash there.
        self.fault_hook: Callable[[str], Awaitable[None]] | None = None
        # Awaited with the drop id after a hold is cancelled: a draw drop hands the unit
        # to its next standby entry at once (app/services/access.py `released`).
        self.on_released: Callable[[str], Awaitable[None]] | None = None

    async def reserve(
        self,
        user_id: str,
        drop_id: str,
        unchecked_session: str | None = None,
        sizes: Sequence[str] = (),
    ) -> Hold:
        """Hold one unit (of the first of `sizes` with one left, on a sized drop).
        `unchecked_session`: the caller's session, not yet checked for a sign-out; the
        reserve script checks it in the same round trip."""
        if not keys.DROP_ID_RE.match(drop_id):
            raise DropNotFound()
        ref = keys.parse_hold_id(keys.new_hold_id(drop_id, user_id))
        assert ref is not None
        result = await self.hold_store.reserve(ref, self.ttl_ms, unchecked_session, sizes)
        if result.outcome is ReserveOutcome.DROP_NOT_FOUND:
            # Redis does not know the drop: rebuild it from PostgreSQL once, then retry.
            if not await self.ensure_mirrored(drop_id):
                metrics.RESERVE_OUTCOMES.labels(code="DROP_NOT_FOUND").inc()
                raise DropNotFound()
            result = await self.hold_store.reserve(ref, self.ttl_ms, unchecked_session, sizes)
        if result.outcome is ReserveOutcome.REVOKED:
            raise Unauthorized(SIGNED_OUT)
        metrics.RESERVE_OUTCOMES.labels(code=result.outcome.value).inc()
        reserve_tally.count(drop_id, result.outcome.value)
        if result.outcome is ReserveOutcome.DROP_NOT_FOUND:
            raise DropNotFound()
        if result.outcome is ReserveOutcome.COOLDOWN:
            # Whole seconds for Retry-After, rounded up: a client that waits that long is let in.
            raise Cooldown(-(-result.retry_after_ms // 1000))
        refusal = _REFUSALS.get(result.outcome)
        if refusal is SoldOut:
            raise SoldOut("No units left; holds that expire return to stock", available=0)
        if refusal is not None:
            raise refusal()
        return Hold(
            id=ref.hold_id,
            drop_id=drop_id,
            status="ACTIVE",
            expires_at=from_ms(result.expires_at_ms),
            created_at=from_ms(result.created_at_ms),
            size=result.size,
        )

    async def cancel(self, user_id: str, hold_id: str) -> None:
        ref = self._ref_of(user_id, hold_id)
        if await self._reloaded(ref) and await self._settle_sold(ref, None):
            raise HoldPurchased()
        result = await self.hold_store.release(ref, ReleaseReason.CANCELLED, owner=user_id)
        if result.outcome is ReleaseOutcome.RELEASED:
            metrics.HOLDS_RELEASED.labels(reason="cancelled").inc()
            if self.on_released is not None:
                await self.on_released(ref.drop_id)
            return
        if result.outcome is ReleaseOutcome.PURCHASING:
            raise HoldPurchased("A purchase of this reservation is in progress")
        if result.outcome is ReleaseOutcome.ALREADY:
            if result.closed_state == "PURCHASED":
                raise HoldPurchased()
            return  # expired or cancelled already: nothing goes back twice
        if await self._purchased(ref) is not None:
            raise HoldPurchased()
        raise HoldNotFound()

    async def purchase(
        self,
        user_id: str,
        hold_id: str,
        display_name: str,
        unchecked_session: str | None = None,
    ) -> PurchaseResult:
        """Buy the held unit. `unchecked_session`: the caller's session, not yet checked for
        a sign-out; the claim script checks it in the same round trip."""
        ref = self._ref_of(user_id, hold_id)
        for _ in range(ATTEMPTS):
            result = await self._purchase_once(ref, display_name, unchecked_session)
            if result is not None:
                return result
        # Voided twice: PostgreSQL was slower than the claim timeout each time.
        raise ServiceUnavailable("The purchase took too long to record; try again")

    async def _purchase_once(
        self, ref: keys.HoldRef, display_name: str, unchecked_session: str | None
    ) -> PurchaseResult | None:
        """One attempt. None when the sweeper voided it (the hold is ACTIVE again)."""
        claim = await self.hold_store.claim(
            ref, secrets.token_hex(8), self.claim_timeout_ms, unchecked_session
        )
        match claim.outcome:
            case ClaimOutcome.REVOKED:
                raise Unauthorized(SIGNED_OUT)
            case ClaimOutcome.CLAIMED | ClaimOutcome.IN_PROGRESS:
                pass
            case ClaimOutcome.PURCHASED | ClaimOutcome.NOT_FOUND:
                existing = await self._purchased(ref)
                if existing is None:
                    raise HoldNotFound()
                return PurchaseResult(existing, created=False)
            case ClaimOutcome.DUE:
                if sold := await self._settle_sold(ref, display_name):
                    return PurchaseResult(sold, created=False)
                await self._expire(ref)
                raise HoldExpired()
            case ClaimOutcome.EXPIRED | ClaimOutcome.CANCELLED:
                if sold := await self._purchased(ref):
                    return PurchaseResult(sold, created=False)
                if claim.outcome is ClaimOutcome.CANCELLED:
                    raise HoldCancelled()
                raise HoldExpired()
        # IN_PROGRESS: another request runs this claim, or ran it and died. This one runs
        # it too: PostgreSQL records a claim once, and both answer the same purchase.
        owns_claim = claim.outcome is ClaimOutcome.CLAIMED
        await self._fault("after_claim")
        try:
            sale = await sales.record(
                self.db.sales,
                purchase_id=secrets.token_hex(16),
                claim_id=claim.claim_id,
                hold_id=ref.hold_id,
                drop_id=ref.drop_id,
                user_id=ref.user_id,
                size=claim.size,
                epoch=claim.epoch,
                sent=None if self.fault_hook is None else self._sent_fault,
            )
        except sales.OutcomeUnknown:
            raise  # it may have been recorded: the claim stays for a retry or the sweeper
        except (ServiceUnavailable, Unauthorized):
            # Unauthorized: the buyer's account is gone (the insert's foreign key refused it).
            # Known to have written nothing: undo our claim now.
            if owns_claim:
                await self._abort(ref, claim.claim_id)
            raise
        if sale.outcome is SaleOutcome.STALE:
            # The drop was rebuilt from PostgreSQL since the claim (Redis had lost it): the
            # rebuild may have counted this unit as available again, so nothing was sold.
            if owns_claim:
                await self._abort(ref, claim.claim_id)
            raise ServiceUnavailable("The reservation store was reset; try again")
        if sale.purchase is None:
            return None
        await self._fault("after_record")
        await self.hold_store.commit(ref, display_name, sale.purchase.purchased_at)
        if sale.created:
            metrics.PURCHASES.inc()
        return PurchaseResult(sale.purchase, sale.created)

    async def holds_of(self, user_id: str, drop_ids: list[str]) -> list[Hold]:
        now_ms = int(datetime.now(UTC).timestamp() * 1000)
        found: list[Hold] = []
        for hold_id, raw, size in await self.hold_store.live_holds_of(drop_ids, user_id):
            entry = parse_entry(raw)
            if entry.state == "ACTIVE" and entry.expires_at_ms <= now_ms:
                continue  # past its deadline: expired, even before the sweeper runs
            found.append(
                Hold(
                    id=hold_id,
                    drop_id=hold_id.split(".", 1)[0],
                    status="ACTIVE",
                    expires_at=from_ms(entry.expires_at_ms),
                    created_at=from_ms(entry.created_at_ms),
                    size=size,
                )
            )
        found.sort(key=lambda r: r.created_at, reverse=True)
        return found

    async def my_purchases(self, user_id: str) -> list[Purchase]:
        async with self.db.begin() as session:
            return await purchase_rows.of_user(session, user_id)

    # --- helpers -----------------------------------------------------------

    @staticmethod
    def _ref_of(user_id: str, hold_id: str) -> keys.HoldRef:
        ref = keys.parse_hold_id(hold_id)
        # Another user's id answers exactly like a random one.
        if ref is None or ref.user_id != user_id:
            raise HoldNotFound()
        return ref

    async def _purchased(self, ref: keys.HoldRef) -> Purchase | None:
        found = await self._sold(ref)
        return None if found is None else found[0]

    async def _sold(self, ref: keys.HoldRef) -> tuple[Purchase, str] | None:
        """The hold's purchase and its buyer's name, from PostgreSQL: one statement on the
        sale pool, as every 410 and every replayed purchase asks it."""
        async with self.db.sales.connection() as conn:
            found = await sales.sold(conn, ref.hold_id)
        return found if found is not None and found[0].user_id == ref.user_id else None

    async def _reloaded(self, ref: keys.HoldRef) -> bool:
        """Whether Redis reloaded this ACTIVE hold from disk at its last start (see top)."""
        raw = await self.hold_store.entry(ref)
        if raw is None or not raw.startswith("ACTIVE|"):
            return False
        return reloaded_hold(raw, await self.hold_store.server_started_ms())

    async def _settle_sold(self, ref: keys.HoldRef, display_name: str | None) -> Purchase | None:
        """If PostgreSQL recorded this hold's purchase, commit it in Redis and return it."""
        found = await self._sold(ref)
        if found is None:
            return None
        purchase, buyer = found
        name = buyer if display_name is None else display_name
        await self.hold_store.commit(ref, name, purchase.purchased_at)
        return purchase

    async def _expire(self, ref: keys.HoldRef) -> None:
        result = await self.hold_store.release(ref, ReleaseReason.EXPIRED)
        if result.outcome is ReleaseOutcome.RELEASED:
            metrics.HOLDS_EXPIRED.labels(layer="purchase").inc()
            metrics.EXPIRY_LAG.observe(max(result.lag_ms, 0) / 1000)

    async def _abort(self, ref: keys.HoldRef, claim_id: str) -> None:
        outcome = await self.hold_store.abort(ref, claim_id)
        if outcome is AbortOutcome.RESTORED_DUE:
            await self._expire(ref)

    async def _sent_fault(self) -> None:
        await self._fault("statement_sent")

    async def _fault(self, point: str) -> None:
        if self.fault_hook is not None:
            await self.fault_hook(point)
