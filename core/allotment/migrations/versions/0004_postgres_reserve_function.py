"""PostgreSQL: reserve on every wallet in one statement (a plpgsql function)

The ledger used to send the generation check, one UPDATE per wallet and the reservation
INSERT inside BEGIN ... COMMIT: three round trips. ``allotment_reserve`` does the same work,
locking wallets in ascending id order, in one statement run in autocommit. A refusal raises
SQLSTATE AL402 (DETAIL: the wallet id) and a changed directory AL410; either way the
statement, and so every UPDATE it made, is rolled back. SQLite is unchanged.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 13:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

RESERVE = """
CREATE OR REPLACE FUNCTION allotment_reserve(
    p_wallets bigint[],
    p_amount bigint,
    p_generation text,
    p_id text,
    p_request_id text,
    p_wallet_text text,
    p_created timestamptz,
    p_expires timestamptz,
    p_context text
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    wallet bigint;
    current_generation text;
BEGIN
    IF p_generation IS NOT NULL THEN
        SELECT value INTO current_generation FROM meta WHERE key = 'generation';
        IF FOUND AND current_generation IS DISTINCT FROM p_generation THEN
            RAISE EXCEPTION 'the directory changed' USING ERRCODE = 'AL410';
        END IF;
    END IF;
    -- p_wallets is sorted ascending: row locks in a fixed order, so no deadlocks
    FOREACH wallet IN ARRAY p_wallets LOOP
        UPDATE wallets SET reserved_nanos = reserved_nanos + p_amount
         WHERE id = wallet AND limit_nanos - spent_nanos - reserved_nanos >= p_amount;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'budget refused' USING ERRCODE = 'AL402', DETAIL = wallet::text;
        END IF;
    END LOOP;
    INSERT INTO reservations (id, request_id, state, amount_nanos, wallet_ids, created_at,
                              expires_at, context)
    VALUES (p_id, p_request_id, 'open', p_amount, p_wallet_text, p_created, p_expires, p_context);
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(RESERVE)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "DROP FUNCTION IF EXISTS allotment_reserve("
            "bigint[], bigint, text, text, text, text, timestamptz, timestamptz, text)"
        )
