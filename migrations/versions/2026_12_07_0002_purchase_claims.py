"""Purchase claims: one row per purchase attempt, written by its purchaser or its fence.

A purchase attempt (a claim id) is recorded by the purchaser in the statement that inserts
the purchase, or voided by the sweeper when the attempt went stale. Both insert the same
primary key, so exactly one of them wins. It replaces `voided_claims`, which fenced a whole
reservation: a voided attempt now leaves the hold purchasable by a later attempt.

Revision ID: 2026_12_07_0002
Revises: 2026_11_25_0001
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "2026_12_07_0002"
down_revision = "2026_11_25_0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "purchase_claims",
        sa.Column("claim_id", sa.String(32), primary_key=True),
        sa.Column("reservation_id", sa.String(80), nullable=False),
        sa.Column("outcome", sa.String(8), nullable=False),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("outcome IN ('recorded', 'voided')", name="ck_purchase_claims_outcome"),
    )
    op.drop_table("voided_claims")


def downgrade() -> None:
    op.create_table(
        "voided_claims",
        sa.Column("reservation_id", sa.String(80), primary_key=True),
        sa.Column("voided_at", TS, nullable=False, server_default=sa.func.now()),
    )
    op.drop_table("purchase_claims")
