"""Drop management (admin) and drop views (anyone).

Writes go to PostgreSQL first and are mirrored into Redis before the call
returns. Views are read from Redis only; a drop Redis does not have (a new
process after a flush, say) is rebuilt from PostgreSQL on first sight.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from app import fairness
from app.db import drops as drop_rows
from app.db.models import Drop, DropSize
from app.db.session import Database
from app.domain import (
    OPEN_ACCESS,
    STOREFRONT_STATUSES,
    Access,
    AccessSettings,
    DropCounters,
    DropDefinition,
    DropFields,
    DropStatus,
    SizeFact,
    drop_fields_of,
    drop_status,
)
from app.errors import DropNotFound, InvalidState, SizeRequired, UnknownSize, ValidationFailed
from app.services.rebuild import rebuild_drop
from app.services.recent_misses import RecentMisses
from app.services.settlement import commit_the_sold
from app.store import keys
from app.store.drops import DropStore, MirroredDrop, RebuildMode, RebuildOutcome
from app.store.holds import HoldStore, ReleaseOutcome, ReleaseReason


@dataclass(frozen=True, slots=True)
class DropView:
    definition: DropDefinition
    counters: DropCounters
    status: DropStatus


@dataclass(frozen=True, slots=True)
class DropPatch:
    name: str | None = None
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    cancel: bool = False


def _view(mirrored: MirroredDrop, now: datetime) -> DropView:
    status = drop_status(mirrored.definition, mirrored.counters, now)
    return DropView(mirrored.definition, mirrored.counters, status)


def _check_access_times(
    access: AccessSettings, starts_at: datetime, ends_at: datetime | None
) -> None:
    """A draw takes entries from startsAt until closesAt, which comes before endsAt."""
    if access.closes_at is None:
        return
    if access.closes_at <= starts_at:
        raise ValidationFailed("draw.closesAt must be after startsAt")
    if ends_at is not None and access.closes_at >= ends_at:
        raise ValidationFailed("draw.closesAt must be before endsAt")


class DropService:
    def __init__(self, db: Database, drop_store: DropStore, hold_store: HoldStore) -> None:
        self.db = db
        self.drop_store = drop_store
        self.hold_store = hold_store
        self.unknown_ids = RecentMisses()

    # --- views -------------------------------------------------------------

    async def get(self, drop_id: str) -> DropView:
        if not keys.DROP_ID_RE.match(drop_id):
            raise DropNotFound()
        found = await self.drop_store.read([drop_id])
        if drop_id not in found:
            if not await self.ensure_mirrored(drop_id):
                raise DropNotFound()
            found = await self.drop_store.read([drop_id])
        return _view(found[drop_id], datetime.now(UTC))

    async def list(self, status: DropStatus | None, everything: bool = False) -> list[DropView]:
        if not await self.drop_store.index_loaded():
            await self.mirror_all()
        ids = await self.drop_store.index()
        found = await self.drop_store.read(ids)
        now = datetime.now(UTC)
        views = [_view(found[i], now) for i in ids if i in found]
        if everything:
            return views
        if status is not None:
            return [v for v in views if v.status is status]
        return [v for v in views if v.status in STOREFRONT_STATUSES]

    # --- mirror ------------------------------------------------------------

    async def ensure_mirrored(self, drop_id: str) -> bool:
        """Build a drop's Redis state from PostgreSQL if Redis lacks it. False: no such drop."""
        if drop_id in self.unknown_ids:
            return False
        outcome = await rebuild_drop(self.db, self.drop_store, drop_id, RebuildMode.INIT)
        if outcome is None:
            self.unknown_ids.add(drop_id)
            return False
        if outcome is RebuildOutcome.BUILT:
            await self.drop_store.bump_listing_version()
        return True

    async def mirror_all(self) -> int:
        """Mirror every drop Redis lacks; returns how many were built."""
        async with self.db.begin() as session:
            rows = await drop_rows.all_drops(session)
        present = await self.drop_store.read([row.id for row in rows])
        built = 0
        for row in rows:
            if row.id not in present and await self.ensure_mirrored(row.id):
                built += 1
        await self.drop_store.mark_index_loaded()
        return built

    async def _publish(self, row: Drop) -> DropView:
        """Mirror a committed row, then answer from Redis."""
        definition = drop_rows.to_definition(row)
        if not await self.drop_store.sync(definition):
            await self.ensure_mirrored(row.id)
        return await self.get(row.id)

    # --- admin -------------------------------------------------------------

    async def create(
        self,
        new: DropFields,
        sizes: Sequence[tuple[str, int]] = (),
        access: AccessSettings = OPEN_ACCESS,
    ) -> DropView:
        """`sizes`: (label, total stock) in the storefront's order; their totals sum to
        `new.total_stock` (the API checks both). A queue or draw drop (`access`) gets its
        secret fairness seed here."""
        if new.ends_at is not None and new.ends_at <= new.starts_at:
            raise ValidationFailed("endsAt must be after startsAt")
        _check_access_times(access, new.starts_at, new.ends_at)
        row = Drop(id=keys.new_id(), state="active", **drop_fields_of(new))
        if access.access is not Access.OPEN:
            row.access = access.access.value
            row.admit_per_minute = access.admit_per_minute
            row.pass_seconds = access.pass_seconds
            row.closes_at = access.closes_at
            row.claim_seconds = access.claim_seconds
            row.fairness_seed = fairness.new_seed()
        row.sizes = [
            DropSize(position=i, label=label, total_stock=total)
            for i, (label, total) in enumerate(sizes, start=1)
        ]
        async with self.db.begin() as session:
            session.add(row)
        self.unknown_ids.discard(row.id)
        facts = [SizeFact(label, total, 0) for label, total in sizes]
        await self.drop_store.rebuild(
            RebuildMode.INIT, drop_rows.to_definition(row), 0, {}, sizes=facts
        )
        await self.drop_store.bump_listing_version()
        return await self.get(row.id)

    async def update(self, drop_id: str, patch: DropPatch) -> DropView:
        async with self._changing(drop_id) as (row, now):
            starts_at = patch.starts_at or row.starts_at
            ends_at = patch.ends_at if patch.ends_at is not None else row.ends_at
            if ends_at is not None and ends_at <= starts_at:
                raise ValidationFailed("endsAt must be after startsAt")
            access = drop_rows.access_of(row)
            if access.access is not Access.OPEN and starts_at != row.starts_at:
                if now >= row.starts_at:
                    # The pre-queue or the entries were taken under the old start.
                    raise InvalidState("A queue or draw drop's start cannot move once reached")
            _check_access_times(access, starts_at, ends_at)
            if patch.name is not None:
                row.name = patch.name
            row.starts_at, row.ends_at, row.updated_at = starts_at, ends_at, now
            if patch.cancel:
                row.state = "cancelled"
        view = await self._publish(row)
        if patch.cancel:
            await self._cancel_holds(drop_id)
            view = await self.get(drop_id)
        await self.drop_store.bump_listing_version()
        return view

    async def restock(self, drop_id: str, quantity: int, size: str | None = None) -> DropView:
        """Add units to the drop, or to one of its sizes (required on a sized drop)."""
        async with self._changing(drop_id) as (row, now):
            if row.sizes and size is None:
                raise SizeRequired("This drop sells sizes: name the size to restock")
            if size is not None:
                restocked = next((s for s in row.sizes if s.label == size), None)
                if restocked is None:
                    raise UnknownSize(f"This drop has no size {size!r}")
                restocked.total_stock += quantity
            row.total_stock += quantity
            row.updated_at = now
        # PostgreSQL's totals now include the units; Redis follows (or is rebuilt with them).
        if await self.drop_store.restock(drop_id, quantity, size) is None:
            await self.ensure_mirrored(drop_id)
        await self.drop_store.bump_listing_version()
        return await self.get(drop_id)

    async def _cancel_holds(self, drop_id: str) -> int:
        """Release every ACTIVE hold of a cancelled drop (no new hold can start: it is cancelled).

        A hold PostgreSQL shows as bought (Redis restored from an older copy) is
        committed instead: its unit was sold and never goes back.
        """
        held = await self.hold_store.hold_ids(drop_id)
        refs = [r for r in map(keys.parse_hold_id, held) if r is not None]
        sold = await commit_the_sold(self.db, self.hold_store, refs)
        unsold = [r for r in refs if r.hold_id not in sold]
        results = await self.hold_store.release_many(unsold, ReleaseReason.CANCELLED)
        return sum(result.outcome is ReleaseOutcome.RELEASED for result in results)

    @asynccontextmanager
    async def _changing(self, drop_id: str) -> AsyncIterator[tuple[Drop, datetime]]:
        """The drop's row, locked, and the time of the change; leaving commits it.

        404 for an unknown drop (a malformed id without asking PostgreSQL), 409 for a
        cancelled or ended one.
        """
        if not keys.DROP_ID_RE.match(drop_id):
            raise DropNotFound()
        now = datetime.now(UTC)
        async with self.db.begin() as session:
            row = await drop_rows.get(session, drop_id, lock=True)
            if row is None:
                raise DropNotFound()
            self._require_open(row, now)
            yield row, now

    @staticmethod
    def _require_open(row: Drop, now: datetime) -> None:
        if row.state == "cancelled":
            raise InvalidState("The drop is cancelled")
        if row.ends_at is not None and now >= row.ends_at:
            raise InvalidState("The drop has ended")
