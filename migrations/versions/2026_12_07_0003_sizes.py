"""Sizes: a drop's sizes, each with its own stock, and the size on each purchase.

Revision ID: 2026_12_07_0003
Revises: 2026_12_07_0002
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "2026_12_07_0003"
down_revision = "2026_12_07_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "drop_sizes",
        sa.Column(
            "drop_id",
            sa.String(32),
            sa.ForeignKey("drops.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("position", sa.SmallInteger(), primary_key=True),
        sa.Column("label", sa.String(16), nullable=False),
        sa.Column("total_stock", sa.Integer(), nullable=False),
        sa.CheckConstraint("total_stock >= 0", name="ck_drop_sizes_total_stock_non_negative"),
        sa.CheckConstraint("position BETWEEN 1 AND 40", name="ck_drop_sizes_position_range"),
        sa.CheckConstraint(
            "char_length(label) BETWEEN 1 AND 16", name="ck_drop_sizes_label_length"
        ),
        sa.UniqueConstraint("drop_id", "label", name="uq_drop_sizes_drop_id_label"),
    )
    op.add_column("purchases", sa.Column("size", sa.String(16)))


def downgrade() -> None:
    op.drop_column("purchases", "size")
    op.drop_table("drop_sizes")
