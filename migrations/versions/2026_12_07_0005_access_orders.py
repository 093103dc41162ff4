"""Fair access: a fixed order recorded in one row (the rank-ordered entry ids and rank
keys), so fixing it costs one insert however many entries there are; `access_entries`
follows for audit, and says when it did.

Revision ID: 2026_12_07_0005
Revises: 2026_12_07_0004
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "2026_12_07_0005"
down_revision = "2026_12_07_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "access_orders",
        sa.Column(
            "drop_id",
            sa.String(32),
            sa.ForeignKey("drops.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("entries", sa.Integer(), nullable=False),
        sa.Column("ordered", sa.Text(), nullable=False),
        sa.Column("fixed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("entries_recorded_at", sa.DateTime(timezone=True)),
    )


def downgrade() -> None:
    op.drop_table("access_orders")
