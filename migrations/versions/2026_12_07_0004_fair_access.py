"""Fair access: a drop's access mode (open, queue, draw), its settings and fairness seed,
and the ordered entries of queue and draw drops for audit.

Revision ID: 2026_12_07_0004
Revises: 2026_12_07_0003
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "2026_12_07_0004"
down_revision = "2026_12_07_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("drops", sa.Column("access", sa.String(8), nullable=False, server_default="open"))
    op.add_column("drops", sa.Column("admit_per_minute", sa.Integer()))
    op.add_column("drops", sa.Column("pass_seconds", sa.Integer()))
    op.add_column("drops", sa.Column("closes_at", sa.DateTime(timezone=True)))
    op.add_column("drops", sa.Column("claim_seconds", sa.Integer()))
    op.add_column("drops", sa.Column("fairness_seed", sa.LargeBinary()))
    op.add_column("drops", sa.Column("order_fixed_at", sa.DateTime(timezone=True)))
    op.add_column("drops", sa.Column("ordered_entries", sa.Integer()))
    op.create_check_constraint(
        op.f("ck_drops_access"), "drops", "access IN ('open', 'queue', 'draw')"
    )
    op.create_check_constraint(
        op.f("ck_drops_access_settings"),
        "drops",
        "(access = 'open' AND fairness_seed IS NULL AND closes_at IS NULL"
        " AND admit_per_minute IS NULL)"
        " OR (access = 'queue' AND fairness_seed IS NOT NULL AND admit_per_minute IS NOT NULL"
        " AND pass_seconds IS NOT NULL AND closes_at IS NULL)"
        " OR (access = 'draw' AND fairness_seed IS NOT NULL AND closes_at IS NOT NULL"
        " AND closes_at > starts_at AND claim_seconds IS NOT NULL AND admit_per_minute IS NULL)",
    )
    op.create_table(
        "access_entries",
        sa.Column("entry_id", sa.String(16), primary_key=True),
        sa.Column(
            "drop_id", sa.String(32), sa.ForeignKey("drops.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column(
            "user_id", sa.String(32), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("rank_key", sa.String(64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("sizes", sa.Text()),
        sa.Column("outcome", sa.String(8)),
        sa.Column("reservation_id", sa.String(80)),
        sa.Column("recorded_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
        sa.CheckConstraint(
            "outcome IS NULL OR outcome IN ('won', 'standby', 'lost')",
            name=op.f("ck_access_entries_outcome"),
        ),
        sa.UniqueConstraint("drop_id", "user_id", name=op.f("uq_access_entries_drop_id_user")),
        sa.UniqueConstraint("drop_id", "position", name=op.f("uq_access_entries_drop_id_position")),
    )


def downgrade() -> None:
    op.drop_table("access_entries")
    op.drop_constraint("ck_drops_access_settings", "drops")
    op.drop_constraint("ck_drops_access", "drops")
    for column in (
        "ordered_entries",
        "order_fixed_at",
        "fairness_seed",
        "claim_seconds",
        "closes_at",
        "pass_seconds",
        "admit_per_minute",
        "access",
    ):
        op.drop_column("drops", column)
