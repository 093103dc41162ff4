"""A sale in one round trip: `record_sale`, and the rebuild epoch it checks.

A purchase's PostgreSQL step used to be BEGIN, the sale statement, a check in Redis that
the claim was still there, and COMMIT: four round trips, the check there only so that a
sale never lands after the drop's Redis counters were rebuilt without its hold. Each
rebuild now takes a new epoch from `drop_rebuild_epochs` under the drop's exclusive
advisory lock and records it in `drops.redis_epoch` (and in Redis, in the drop hash the
purchase claim reads). `record_sale` takes the shared side of the lock and then, in a
snapshot taken after it, refuses a claim read before the latest rebuild: the same
guarantee, in one statement in its own transaction.

Revision ID: 2026_12_07_0006
Revises: 2026_12_07_0005
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "2026_12_07_0006"
down_revision = "2026_12_07_0005"
branch_labels = None
depends_on = None

RECORD_SALE = """
CREATE FUNCTION record_sale(
    p_purchase_id varchar, p_hold_id varchar, p_drop_id varchar, p_user_id varchar,
    p_claim_id varchar, p_size varchar, p_epoch bigint
) RETURNS TABLE (
    outcome text, id varchar, reservation_id varchar, drop_id varchar, user_id varchar,
    price_cents bigint, currency varchar, purchased_at timestamptz, size varchar
)
LANGUAGE plpgsql VOLATILE
AS $$
#variable_conflict use_column
-- outcome: 'created' (this call inserted the purchase), 'found' (the hold's purchase was
-- already there), 'voided' (the sweeper fenced this attempt: nothing sold), 'stale' (the
-- drop was rebuilt since the claim was read: nothing sold). No row: no such drop.
DECLARE
    sale_drop record;
    current boolean;
BEGIN
    -- A rebuild holds the exclusive side while it counts purchases: it counts this sale
    -- entirely or not at all. Each statement below sees what committed before the lock.
    PERFORM pg_advisory_xact_lock_shared(hashtextextended('drop:' || p_drop_id, 0));
    SELECT d.redis_epoch, d.price_cents, d.currency INTO sale_drop
    FROM drops d WHERE d.id = p_drop_id;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    current := sale_drop.redis_epoch <= p_epoch;
    IF current THEN
        -- The sweeper voids a stale attempt by inserting the same key: one of the two wins.
        INSERT INTO purchase_claims AS c (claim_id, reservation_id, outcome)
        VALUES (p_claim_id, p_hold_id, 'recorded')
        ON CONFLICT (claim_id) DO NOTHING;
        IF FOUND THEN
            RETURN QUERY
            INSERT INTO purchases AS p
                (id, reservation_id, drop_id, user_id, price_cents, currency, size)
            VALUES (p_purchase_id, p_hold_id, p_drop_id, p_user_id, sale_drop.price_cents,
                    sale_drop.currency, p_size)
            ON CONFLICT (reservation_id) DO NOTHING
            RETURNING 'created'::text, p.id, p.reservation_id, p.drop_id, p.user_id,
                      p.price_cents, p.currency, p.purchased_at, p.size;
            IF FOUND THEN
                RETURN;
            END IF;
        END IF;
    END IF;
    RETURN QUERY
    SELECT CASE
               WHEN p.id = p_purchase_id THEN 'created'  -- this call's own, sent again
               WHEN p.id IS NOT NULL THEN 'found'
               WHEN c.outcome = 'voided' THEN 'voided'
               WHEN NOT current THEN 'stale'
               ELSE 'missing'
           END,
           p.id, p.reservation_id, p.drop_id, p.user_id, p.price_cents, p.currency,
           p.purchased_at, p.size
    FROM (SELECT 1) AS one
    LEFT JOIN purchase_claims c ON c.claim_id = p_claim_id
    LEFT JOIN purchases p ON p.reservation_id = p_hold_id;
END
$$
"""


def upgrade() -> None:
    op.execute("CREATE SEQUENCE drop_rebuild_epochs AS bigint")
    op.add_column(
        "drops",
        sa.Column("redis_epoch", sa.BigInteger(), nullable=False, server_default="0"),
    )
    op.execute(RECORD_SALE)


def downgrade() -> None:
    op.execute(
        "DROP FUNCTION record_sale(varchar, varchar, varchar, varchar, varchar, varchar, bigint)"
    )
    op.drop_column("drops", "redis_epoch")
    op.execute("DROP SEQUENCE drop_rebuild_epochs")
