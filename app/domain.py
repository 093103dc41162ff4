"""Plain data shared by the layers: no I/O here.

A drop's definition lives in PostgreSQL and is mirrored into Redis; its live
counters live in Redis. `drop_status` derives the status clients see from both.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson


class DropStatus(StrEnum):
    SCHEDULED = "scheduled"
    LIVE = "live"
    SOLD_OUT = "sold_out"
    ENDED = "ended"
    CANCELLED = "cancelled"


STOREFRONT_STATUSES = frozenset({DropStatus.SCHEDULED, DropStatus.LIVE, DropStatus.SOLD_OUT})


def to_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def iso(moment: datetime) -> str:
    """ISO-8601 UTC with a `Z`, millisecond precision."""
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return moment.isoformat(timespec="milliseconds")[:-6] + "Z"  # drop "+00:00"


@dataclass(frozen=True, slots=True)
class DropFields:
    """A drop's own fields, as an admin sets them at creation.

    The one list to add a field to: the PostgreSQL row is written and read through it
    (app/db/drops.py, app/services/drops.py), the Redis mirror stores it, and the create
    route fills it from the request body by name. What clients see is declared on the
    wire side (app/api/schemas.py, app/api/render.py), with the counters beside it.
    """

    name: str
    brand: str | None
    image_url: str | None
    price_cents: int
    currency: str
    total_stock: int
    per_user_limit: int
    starts_at: datetime
    ends_at: datetime | None


def drop_fields_of(source: object) -> dict[str, Any]:
    """The `DropFields` values read by name off `source` (a row, a definition, a body)."""
    return {field.name: getattr(source, field.name) for field in fields(DropFields)}


class Access(StrEnum):
    OPEN = "open"  # first come, first served
    QUEUE = "queue"  # a waiting room, admitted in the published order
    DRAW = "draw"  # a raffle at closesAt, in the published order


@dataclass(frozen=True, slots=True)
class AccessSettings:
    """How a drop lets shoppers in; set at creation, never changed.

    A queue drop has `admit_per_minute` and `pass_seconds`; a draw drop `closes_at` and
    `claim_seconds`; both a secret `seed` (hex) whose order is published (app/fairness.py).
    """

    access: Access = Access.OPEN
    admit_per_minute: int | None = None
    pass_seconds: int | None = None
    closes_at: datetime | None = None
    claim_seconds: int | None = None
    seed: str | None = None


OPEN_ACCESS = AccessSettings()


@dataclass(frozen=True, slots=True)
class DropDefinition(DropFields):
    """A drop as it is mirrored into Redis: its fields, its id, whether it was cancelled,
    its size labels in the admin's order (none for a drop without sizes), and its access
    settings (the seed is secret: never rendered from here)."""

    id: str
    cancelled: bool
    sizes: tuple[str, ...] = ()
    access: AccessSettings = OPEN_ACCESS

    def to_json(self) -> str:
        # id first and cancelled last: the stored JSON keeps the order it always had.
        data: dict[str, Any] = {"id": self.id, **drop_fields_of(self), "cancelled": self.cancelled}
        if self.sizes:
            data["sizes"] = list(self.sizes)
        data["starts_at"] = to_ms(self.starts_at)
        data["ends_at"] = to_ms(self.ends_at) if self.ends_at else None
        if self.access.access is not Access.OPEN:
            a = self.access
            # Flat, in milliseconds: drop_rebuild.lua copies these into the drop's hash.
            data["access"] = {
                "mode": a.access.value,
                "rate": a.admit_per_minute,
                "pass_ms": a.pass_seconds * 1000 if a.pass_seconds else None,
                "closes": to_ms(a.closes_at) if a.closes_at else None,
                "claim_ms": a.claim_seconds * 1000 if a.claim_seconds else None,
                "seed": a.seed,
            }
        return orjson.dumps(data).decode()

    @classmethod
    def from_json(cls, raw: str) -> DropDefinition:
        data = orjson.loads(raw)
        data["starts_at"] = from_ms(data["starts_at"])
        data["ends_at"] = from_ms(data["ends_at"]) if data["ends_at"] is not None else None
        data["sizes"] = tuple(data.get("sizes", ()))
        access = data.pop("access", None)
        if access is not None:
            data["access"] = AccessSettings(
                access=Access(access["mode"]),
                admit_per_minute=access["rate"],
                pass_seconds=access["pass_ms"] // 1000 if access["pass_ms"] else None,
                closes_at=from_ms(access["closes"]) if access["closes"] else None,
                claim_seconds=access["claim_ms"] // 1000 if access["claim_ms"] else None,
                seed=access["seed"],
            )
        return cls(**data)


@dataclass(frozen=True, slots=True)
class SizeStock:
    """One size's stock: its label, total and available units."""

    size: str
    total: int
    available: int


@dataclass(frozen=True, slots=True)
class SizeFact:
    """One size as PostgreSQL records it: label, total stock, units sold."""

    size: str
    total: int
    sold: int


@dataclass(frozen=True, slots=True)
class DropCounters:
    """What Redis counts for one drop (and for each of its sizes, in the admin's order)."""

    total: int
    available: int
    sold: int
    live_holds: int
    recent_buyers: list[dict[str, str]]
    sizes: tuple[SizeStock, ...] = ()


def drop_status(definition: DropDefinition, counters: DropCounters, now: datetime) -> DropStatus:
    if definition.cancelled:
        return DropStatus.CANCELLED
    if definition.ends_at is not None and now >= definition.ends_at:
        return DropStatus.ENDED
    if now < definition.starts_at:
        return DropStatus.SCHEDULED
    if counters.available <= 0 and counters.live_holds == 0:
        return DropStatus.SOLD_OUT
    return DropStatus.LIVE
