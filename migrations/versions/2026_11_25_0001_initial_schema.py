"""Initial schema: users, refresh-token families, drops, purchases.

Revision ID: 2026_11_25_0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "2026_11_25_0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("password_hash", sa.String(100), nullable=False),
        sa.Column("display_name", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False, server_default="customer"),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("role IN ('customer', 'admin')", name="ck_users_role"),
    )
    op.create_index("uq_users_email_lower", "users", [sa.text("lower(email)")], unique=True)

    op.create_table(
        "refresh_families",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column(
            "user_id", sa.String(32), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("revoked_at", TS),
        sa.Column("revoke_reason", sa.String(32)),
    )
    op.create_index("ix_refresh_families_user_id", "refresh_families", ["user_id"])

    op.create_table(
        "refresh_tokens",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column(
            "family_id",
            sa.String(32),
            sa.ForeignKey("refresh_families.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("rotated_at", TS),
    )
    op.create_index("ix_refresh_tokens_family_id", "refresh_tokens", ["family_id"])

    op.create_table(
        "drops",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("brand", sa.String(100)),
        sa.Column("image_url", sa.Text()),
        sa.Column("price_cents", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("total_stock", sa.Integer(), nullable=False),
        sa.Column("per_user_limit", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("starts_at", TS, nullable=False),
        sa.Column("ends_at", TS),
        sa.Column("state", sa.String(16), nullable=False, server_default="active"),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", TS, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("total_stock >= 0", name="ck_drops_total_stock_non_negative"),
        sa.CheckConstraint("price_cents >= 0", name="ck_drops_price_non_negative"),
        sa.CheckConstraint("per_user_limit >= 1", name="ck_drops_per_user_limit_positive"),
        sa.CheckConstraint(
            "ends_at IS NULL OR ends_at > starts_at", name="ck_drops_ends_after_start"
        ),
        sa.CheckConstraint("state IN ('active', 'cancelled')", name="ck_drops_state"),
    )
    op.create_index("ix_drops_starts_at", "drops", ["starts_at"])

    op.create_table(
        "purchases",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("reservation_id", sa.String(80), nullable=False, unique=True),
        sa.Column(
            "drop_id", sa.String(32), sa.ForeignKey("drops.id", ondelete="RESTRICT"), nullable=False
        ),
        sa.Column(
            "user_id", sa.String(32), sa.ForeignKey("users.id", ondelete="RESTRICT"), nullable=False
        ),
        sa.Column("price_cents", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("purchased_at", TS, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("price_cents >= 0", name="ck_purchases_price_non_negative"),
    )
    op.create_index("ix_purchases_drop_time", "purchases", ["drop_id", "purchased_at"])
    op.create_index("ix_purchases_user_time", "purchases", ["user_id", "purchased_at"])

    op.create_table(
        "voided_claims",
        sa.Column("reservation_id", sa.String(80), primary_key=True),
        sa.Column("voided_at", TS, nullable=False, server_default=sa.func.now()),
    )


def downgrade() -> None:
    op.drop_table("voided_claims")
    op.drop_table("purchases")
    op.drop_table("drops")
    op.drop_table("refresh_tokens")
    op.drop_table("refresh_families")
    op.drop_table("users")
