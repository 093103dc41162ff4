"""Wire models: camelCase JSON, unknown fields rejected, sizes bounded."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    EmailStr,
    Field,
    HttpUrl,
    StrictInt,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from app.services.passwords import MAX_PASSWORD_BYTES, MIN_PASSWORD_BYTES

# Numbers are StrictInt: "10" or true is not a quantity of sneakers.


class WireModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", str_strip_whitespace=False
    )


def _no_control_chars(value: str) -> str:
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValueError("must not contain control characters")
    return value


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL")
    return value


def _aware(value: datetime) -> datetime:
    """An instant with a zone, as UTC. 0001-01-01T00:00:00+14:00 is in year 0 in UTC:
    beyond what a datetime (and so every later comparison or conversion) can hold."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("must include a time zone (e.g. a trailing Z)")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError(
            "must fall between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z in UTC"
        ) from None


_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})?$"
)


def _rfc3339(value: object) -> object:
    """The schema says `format: date-time`; on its own pydantic also takes unix seconds
    (as a number or a string), a bare date, or a time without seconds."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _RFC3339.match(value):
        raise ValueError("must be an RFC 3339 date-time such as 2031-01-01T12:00:00Z")
    return value


Text = Annotated[str, StringConstraints(strip_whitespace=True), AfterValidator(_no_control_chars)]
AwareDatetime = Annotated[datetime, BeforeValidator(_rfc3339), AfterValidator(_aware)]
Timestamp = Annotated[datetime, Field(json_schema_extra={"format": "date-time"})]


# --- auth ---------------------------------------------------------------------


class SignupBody(WireModel):
    email: EmailStr = Field(max_length=254)
    password: str = Field(max_length=1024)
    display_name: Annotated[Text, Field(min_length=1, max_length=64)] | None = None

    @field_validator("password")
    @classmethod
    def _password_bytes(cls, value: str) -> str:
        size = len(value.encode())
        if not MIN_PASSWORD_BYTES <= size <= MAX_PASSWORD_BYTES:
            raise ValueError(
                f"password must be {MIN_PASSWORD_BYTES} to {MAX_PASSWORD_BYTES} bytes in UTF-8"
            )
        return _no_nul(value)


class LoginBody(WireModel):
    email: Annotated[str, AfterValidator(_no_control_chars)] = Field(min_length=1, max_length=320)
    password: Annotated[str, AfterValidator(_no_nul)] = Field(min_length=1, max_length=1024)


class RefreshBody(WireModel):
    refresh_token: str = Field(min_length=1, max_length=4096)


class UserOut(WireModel):
    id: str
    email: str
    display_name: str
    role: Literal["customer", "admin"]


class SessionOut(WireModel):
    user: UserOut
    access_token: str
    refresh_token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_in: int


# --- drops --------------------------------------------------------------------


class RecentBuyer(WireModel):
    display_name: str
    purchased_at: Timestamp


DropStatusName = Literal["scheduled", "live", "sold_out", "ended", "cancelled"]


MAX_SIZES = 40
MAX_FALLBACK_SIZES = 5


def _size_label(value: str) -> str:
    if value != value.strip():
        raise ValueError("must not start or end with whitespace")
    if not value.isprintable():
        raise ValueError("must be printable characters only")
    return value


# "US 9.5", "EU 43": 1 to 16 printable characters.
SizeLabel = Annotated[
    str, StringConstraints(min_length=1, max_length=16), AfterValidator(_size_label)
]


class SizeStockOut(WireModel):
    size: str
    total_stock: int
    available_stock: int


AccessName = Literal["open", "queue", "draw"]


class QueueSettingsOut(WireModel):
    admit_per_minute: int
    pass_seconds: int


class DrawSettingsOut(WireModel):
    closes_at: Timestamp
    claim_seconds: int


class DropOut(WireModel):
    """The wire's `Drop`: the admin's fields (app/domain.py DropFields) with the counters."""

    id: str
    name: str
    brand: str | None
    image_url: str | None
    currency: str
    price_cents: int
    total_stock: int
    available_stock: int
    per_user_limit: int
    starts_at: Timestamp
    ends_at: Timestamp | None
    status: DropStatusName
    active_reservations: int
    recent_buyers: list[RecentBuyer]
    sizes: list[SizeStockOut]
    access: AccessName
    queue: QueueSettingsOut | None
    draw: DrawSettingsOut | None


MAX_STOCK = 10_000_000
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]


class SizeIn(WireModel):
    size: SizeLabel
    total_stock: StrictInt = Field(ge=0, le=MAX_STOCK)


class QueueSettingsIn(WireModel):
    admit_per_minute: StrictInt = Field(default=600, ge=1, le=100_000)
    pass_seconds: StrictInt = Field(default=300, ge=1, le=86_400)


class DrawSettingsIn(WireModel):
    closes_at: AwareDatetime
    claim_seconds: StrictInt = Field(default=600, ge=1, le=86_400)


class DropCreateBody(WireModel):
    name: Annotated[Text, Field(min_length=1, max_length=200)]
    brand: Annotated[Text, Field(min_length=1, max_length=100)] | None = None
    image_url: HttpUrl | None = Field(default=None)
    price_cents: StrictInt = Field(ge=0, le=100_000_000_00)
    currency: Currency = "USD"
    # Required without `sizes`; with them, omitted or their sum.
    total_stock: StrictInt | None = Field(default=None, ge=0, le=MAX_STOCK)
    sizes: list[SizeIn] | None = Field(default=None, min_length=1, max_length=MAX_SIZES)
    per_user_limit: StrictInt = Field(default=1, ge=1, le=1000)
    starts_at: AwareDatetime | None = None
    ends_at: AwareDatetime | None = None
    access: AccessName = "open"
    queue: QueueSettingsIn | None = None
    draw: DrawSettingsIn | None = None

    @field_validator("image_url")
    @classmethod
    def _url_length(cls, value: HttpUrl | None) -> HttpUrl | None:
        if value is not None and len(str(value)) > 2048:
            raise ValueError("imageUrl must be at most 2048 characters")
        return value

    @model_validator(mode="after")
    def _access_settings_match(self) -> DropCreateBody:
        if self.queue is not None and self.access != "queue":
            raise ValueError("queue settings are for a drop with access 'queue'")
        if self.draw is not None and self.access != "draw":
            raise ValueError("draw settings are for a drop with access 'draw'")
        if self.access == "draw" and self.draw is None:
            raise ValueError("a draw drop needs draw.closesAt")
        if self.access == "queue" and self.queue is None:
            self.queue = QueueSettingsIn()
        return self

    @model_validator(mode="after")
    def _stock_adds_up(self) -> DropCreateBody:
        if self.sizes is None:
            if self.total_stock is None:
                raise ValueError("totalStock is required (or sizes, each with its stock)")
            return self
        labels = [s.size for s in self.sizes]
        if len(set(labels)) != len(labels):
            raise ValueError("sizes must have unique labels")
        total = sum(s.total_stock for s in self.sizes)
        if total > MAX_STOCK:
            raise ValueError(f"sizes must add up to at most {MAX_STOCK} units")
        if self.total_stock is not None and self.total_stock != total:
            raise ValueError(f"totalStock must equal the sum of the sizes' stock ({total})")
        self.total_stock = total
        return self


class DropPatchBody(WireModel):
    name: Annotated[Text, Field(min_length=1, max_length=200)] | None = None
    starts_at: AwareDatetime | None = None
    ends_at: AwareDatetime | None = None
    status: Literal["cancelled"] | None = None


class RestockBody(WireModel):
    quantity: StrictInt = Field(ge=1, le=1_000_000)
    size: SizeLabel | None = None  # required on a drop with sizes


class ReserveBody(WireModel):
    """Empty, `{}`, or the size wanted with further sizes to try, in order."""

    size: SizeLabel | None = None
    fallback_sizes: list[SizeLabel] = Field(default_factory=list, max_length=MAX_FALLBACK_SIZES)

    @model_validator(mode="after")
    def _fallbacks_need_a_size(self) -> ReserveBody:
        if self.fallback_sizes and self.size is None:
            raise ValueError("fallbackSizes needs a size to fall back from")
        return self

    @property
    def sizes(self) -> list[str]:
        """Every size to try, in order (none on a drop without sizes)."""
        return [] if self.size is None else [self.size, *self.fallback_sizes]


# --- fair access ----------------------------------------------------------------


class TicketOut(WireModel):
    entry_id: str
    drop_id: str
    status: Literal["waiting", "admitted", "expired", "closed"]
    position: int | None
    ahead: int | None
    estimated_wait_seconds: int | None
    admitted_at: Timestamp | None
    pass_expires_at: Timestamp | None


class QueueOut(WireModel):
    drop_id: str
    waiting: int
    admitted: int
    serving_position: int
    admit_per_minute: int
    pass_seconds: int


class EntryOut(WireModel):
    entry_id: str
    drop_id: str
    status: Literal["entered", "won", "standby", "lost"]
    size: str | None
    fallback_sizes: list[str]
    position: int | None
    reservation_id: str | None


class FairnessOut(WireModel):
    drop_id: str
    access: Literal["queue", "draw"]
    algorithm: Literal["hmac-sha256-v1"]
    seed_commitment: str
    seed: str | None
    entries: int
    order_fixed_at: Timestamp | None


class OrderedEntryOut(WireModel):
    entry_id: str
    rank_key: str
    position: int


# --- holds and purchases ------------------------------------------------------


class ReservationOut(WireModel):
    id: str
    drop_id: str
    status: Literal["ACTIVE", "PURCHASED", "EXPIRED", "CANCELLED"]
    expires_at: Timestamp
    created_at: Timestamp
    size: str | None


class PurchaseOut(WireModel):
    id: str
    reservation_id: str
    drop_id: str
    price_cents: int
    currency: str
    purchased_at: Timestamp
    size: str | None


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    instance: str | None = None
    errors: list[dict[str, object]] | None = None
