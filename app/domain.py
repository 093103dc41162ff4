"""Plain data shared by the layers: no I/O here.

A drop's definition lives in PostgreSQL and is mirrored into Redis; its live
counters live in Redis. `drop_status` derives the status clients see from both.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum

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
class DropDefinition:
    id: str
    name: str
    brand: str | None
    image_url: str | None
    price_cents: int
    currency: str
    total_stock: int
    per_user_limit: int
    starts_at: datetime
    ends_at: datetime | None
    cancelled: bool

    def to_json(self) -> str:
        data = asdict(self)
        data["starts_at"] = to_ms(self.starts_at)
        data["ends_at"] = to_ms(self.ends_at) if self.ends_at else None
        return orjson.dumps(data).decode()

    @classmethod
    def from_json(cls, raw: str) -> DropDefinition:
        data = orjson.loads(raw)
        data["starts_at"] = from_ms(data["starts_at"])
        data["ends_at"] = from_ms(data["ends_at"]) if data["ends_at"] is not None else None
        return cls(**data)


@dataclass(frozen=True, slots=True)
class DropCounters:
    """What Redis counts for one drop."""

    total: int
    available: int
    sold: int
    live_holds: int
    recent_buyers: list[dict[str, str]]


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
