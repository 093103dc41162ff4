"""PostgreSQL schema: the durable system of record.

Users, refresh-token families, drops and purchases. Constraints guard what
must never be false even if application code has a bug: stock is never
negative, an email is unique whatever its case, a reservation is purchased
at most once.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _now() -> DateTime:
    return DateTime(timezone=True)


class User(Base):
    __tablename__ = "users"
    __table_args__ = (
        Index("uq_users_email_lower", func.lower(text("email")), unique=True),
        CheckConstraint("role IN ('customer', 'admin')", name="role"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    password_hash: Mapped[str] = mapped_column(String(100))
    display_name: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16), server_default="customer")
    created_at: Mapped[datetime] = mapped_column(_now(), server_default=func.now())


class RefreshFamily(Base):
    """One login session: every refresh token rotated from one sign-in."""

    __tablename__ = "refresh_families"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(_now(), server_default=func.now())
    revoked_at: Mapped[datetime | None] = mapped_column(_now())
    revoke_reason: Mapped[str | None] = mapped_column(String(32))


class RefreshToken(Base):
    """A refresh token, stored as the SHA-256 of the token, never the token."""

    __tablename__ = "refresh_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    family_id: Mapped[str] = mapped_column(
        ForeignKey("refresh_families.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime] = mapped_column(_now())
    created_at: Mapped[datetime] = mapped_column(_now(), server_default=func.now())
    rotated_at: Mapped[datetime | None] = mapped_column(_now())


class Drop(Base):
    __tablename__ = "drops"
    __table_args__ = (
        CheckConstraint("total_stock >= 0", name="total_stock_non_negative"),
        CheckConstraint("price_cents >= 0", name="price_non_negative"),
        CheckConstraint("per_user_limit >= 1", name="per_user_limit_positive"),
        CheckConstraint("ends_at IS NULL OR ends_at > starts_at", name="ends_after_start"),
        CheckConstraint("state IN ('active', 'cancelled')", name="state"),
        CheckConstraint("access IN ('open', 'queue', 'draw')", name="access"),
        CheckConstraint(
            "(access = 'open' AND fairness_seed IS NULL AND closes_at IS NULL"
            " AND admit_per_minute IS NULL)"
            " OR (access = 'queue' AND fairness_seed IS NOT NULL AND admit_per_minute IS NOT NULL"
            " AND pass_seconds IS NOT NULL AND closes_at IS NULL)"
            " OR (access = 'draw' AND fairness_seed IS NOT NULL AND closes_at IS NOT NULL"
            " AND closes_at > starts_at AND claim_seconds IS NOT NULL AND admit_per_minute IS NULL)",
            name="access_settings",
        ),
        Index("ix_drops_starts_at", "starts_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    brand: Mapped[str | None] = mapped_column(String(100))
    image_url: Mapped[str | None] = mapped_column(Text)
    price_cents: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    total_stock: Mapped[int] = mapped_column(Integer)
    per_user_limit: Mapped[int] = mapped_column(Integer, server_default="1")
    starts_at: Mapped[datetime] = mapped_column(_now())
    ends_at: Mapped[datetime | None] = mapped_column(_now())
    state: Mapped[str] = mapped_column(String(16), server_default="active")
    created_at: Mapped[datetime] = mapped_column(_now(), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(_now(), server_default=func.now())
    # Fair access (docs/FAIRNESS.md): 'open', 'queue' or 'draw', set at creation.
    access: Mapped[str] = mapped_column(String(8), server_default="open")
    admit_per_minute: Mapped[int | None] = mapped_column(Integer)  # queue
    pass_seconds: Mapped[int | None] = mapped_column(Integer)  # queue
    closes_at: Mapped[datetime | None] = mapped_column(_now())  # draw
    claim_seconds: Mapped[int | None] = mapped_column(Integer)  # draw
    # The latest rebuild of the drop's Redis counters (a `drop_rebuild_epochs` value): a
    # sale whose claim was read before it is refused (`record_sale`, app/db/sales.py).
    redis_epoch: Mapped[int] = mapped_column(BigInteger, server_default="0")
    # Secret until the order is fixed (order_fixed_at), then published.
    fairness_seed: Mapped[bytes | None] = mapped_column(LargeBinary)
    order_fixed_at: Mapped[datetime | None] = mapped_column(_now())
    ordered_entries: Mapped[int | None] = mapped_column(Integer)
    # Its sizes, in the admin's order; [] for a drop without sizes. Loaded with the row.
    sizes: Mapped[list[DropSize]] = relationship(
        order_by="DropSize.position", lazy="selectin", cascade="all, delete-orphan"
    )


class DropSize(Base):
    """One size of a drop, with its own stock. The drop's `total_stock` is their sum."""

    __tablename__ = "drop_sizes"
    __table_args__ = (
        CheckConstraint("total_stock >= 0", name="total_stock_non_negative"),
        CheckConstraint("position BETWEEN 1 AND 40", name="position_range"),
        CheckConstraint("char_length(label) BETWEEN 1 AND 16", name="label_length"),
        UniqueConstraint("drop_id", "label", name="uq_drop_sizes_drop_id_label"),
    )

    drop_id: Mapped[str] = mapped_column(
        ForeignKey("drops.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    label: Mapped[str] = mapped_column(String(16))
    total_stock: Mapped[int] = mapped_column(Integer)


class Purchase(Base):
    """A sale. Unique per reservation, so a hold is bought at most once."""

    __tablename__ = "purchases"
    __table_args__ = (
        CheckConstraint("price_cents >= 0", name="price_non_negative"),
        Index("ix_purchases_drop_time", "drop_id", "purchased_at"),
        Index("ix_purchases_user_time", "user_id", "purchased_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    reservation_id: Mapped[str] = mapped_column(String(80), unique=True)
    drop_id: Mapped[str] = mapped_column(ForeignKey("drops.id", ondelete="RESTRICT"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    price_cents: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    purchased_at: Mapped[datetime] = mapped_column(_now(), server_default=func.now())
    size: Mapped[str | None] = mapped_column(String(16))  # the size bought, on a sized drop


class PurchaseClaim(Base):
    """One purchase attempt (a claim id), recorded by its purchaser or voided by the sweeper.

    Both insert the same key, so exactly one wins: a voided attempt never sells, and a
    recorded one is never voided (see `app.db.sales`).
    """

    __tablename__ = "purchase_claims"
    __table_args__ = (CheckConstraint("outcome IN ('recorded', 'voided')", name="outcome"),)

    claim_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    reservation_id: Mapped[str] = mapped_column(String(80))
    outcome: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(_now(), server_default=func.now())


class AccessEntry(Base):
    """One ordered entry of a queue or draw drop: its rank key and position, for audit.

    Written when the order is fixed (the pre-queue at startsAt, every draw entry at
    closesAt); a draw entry's outcome follows it (won, standby, lost).
    """

    __tablename__ = "access_entries"
    __table_args__ = (
        CheckConstraint("outcome IS NULL OR outcome IN ('won', 'standby', 'lost')", name="outcome"),
        UniqueConstraint("drop_id", "user_id", name="uq_access_entries_drop_id_user"),
        UniqueConstraint("drop_id", "position", name="uq_access_entries_drop_id_position"),
    )

    entry_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    drop_id: Mapped[str] = mapped_column(ForeignKey("drops.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    rank_key: Mapped[str] = mapped_column(String(64))
    position: Mapped[int] = mapped_column(Integer)
    sizes: Mapped[str | None] = mapped_column(Text)  # a draw entry's sizes, comma-separated
    outcome: Mapped[str | None] = mapped_column(String(8))
    reservation_id: Mapped[str | None] = mapped_column(String(80))
    recorded_at: Mapped[datetime] = mapped_column(_now(), server_default=func.now())


class AccessOrder(Base):
    """A queue's or draw's fixed order in one row: `ordered` holds one line per entry,
    `<entryId> <rankKey>`, in position order. Written in the step that reveals the seed
    (one insert, however many entries); `access_entries` follows for audit."""

    __tablename__ = "access_orders"

    drop_id: Mapped[str] = mapped_column(
        ForeignKey("drops.id", ondelete="CASCADE"), primary_key=True
    )
    entries: Mapped[int] = mapped_column(Integer)
    ordered: Mapped[str] = mapped_column(Text)
    fixed_at: Mapped[datetime] = mapped_column(_now())
    entries_recorded_at: Mapped[datetime | None] = mapped_column(_now())
