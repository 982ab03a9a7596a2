"""PostgreSQL: reserve and settle in one statement each (plpgsql functions)

The ledger used to send the generation check, one UPDATE per wallet and the reservation
INSERT inside BEGIN ... COMMIT: three round trips. ``allotment_reserve`` does the same work,
locking wallets in ascending id order, in one statement run in autocommit. A refusal raises
SQLSTATE AL402 (DETAIL: the wallet id) and a changed directory AL410; either way the
statement, and so every UPDATE it made, is rolled back.

``allotment_settle`` is the admitting process's settle: claim the open reservation, charge
its wallets in ascending id order, append the event (row hash computed by the caller) and its
ledger entries, and queue budget-threshold crossings in the outbox — one round trip instead
of four. It returns NULL when the reservation was no longer open (nothing changed) and
raises AL409 when a wallet would end over its limit, because the event must then carry the
``over_limit`` flag inside its hash: the caller falls back to the general path for both.
SQLite is unchanged.

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


SETTLE = """
CREATE OR REPLACE FUNCTION allotment_settle(
    p_request_id text,
    p_release bigint,
    p_cost bigint,
    p_wallets bigint[],
    p_event jsonb,
    p_entry_hashes text[],
    p_ts timestamptz,
    p_fractions text[]
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    i int;
    fraction text;
    mark numeric;
    spent bigint;
    wallet_limit bigint;
    spent_after bigint[] := '{}';
    limits bigint[] := '{}';
    new_event_id bigint;
BEGIN
    UPDATE reservations SET state = 'settled' WHERE request_id = p_request_id AND state = 'open';
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    -- p_wallets is sorted ascending: row locks in a fixed order, so no deadlocks
    FOR i IN 1 .. coalesce(array_length(p_wallets, 1), 0) LOOP
        UPDATE wallets
           SET reserved_nanos = reserved_nanos - p_release, spent_nanos = spent_nanos + p_cost
         WHERE id = p_wallets[i]
        RETURNING spent_nanos, limit_nanos INTO spent, wallet_limit;
        IF spent > wallet_limit THEN
            RAISE EXCEPTION 'over the limit' USING ERRCODE = 'AL409', DETAIL = p_wallets[i]::text;
        END IF;
        spent_after := spent_after || spent;
        limits := limits || wallet_limit;
    END LOOP;
    INSERT INTO usage_events (COLUMNS)
    SELECT COLUMNS FROM jsonb_populate_record(NULL::usage_events, p_event)
    RETURNING id INTO new_event_id;
    INSERT INTO ledger_entries (event_id, wallet_id, amount_nanos, ts, row_hash)
    SELECT new_event_id, p_wallets[k], p_cost, p_ts, p_entry_hashes[k]
      FROM generate_subscripts(p_wallets, 1) AS k ORDER BY k;
    -- the spend at the crossing travels with the alert, as the general path does
    FOR i IN 1 .. coalesce(array_length(p_wallets, 1), 0) LOOP
        FOREACH fraction IN ARRAY p_fractions LOOP
            mark := fraction::numeric * limits[i];
            IF limits[i] > 0 AND spent_after[i] - p_cost < mark AND mark <= spent_after[i] THEN
                INSERT INTO outbox (hook, payload, dedup_key, created_at, done)
                VALUES (
                    'budget_threshold',
                    json_build_object('wallet_id', p_wallets[i], 'fraction', fraction,
                                      'spent_nanos', spent_after[i], 'limit_nanos', limits[i])::text,
                    'budget_threshold:' || p_wallets[i] || ':' || fraction,
                    p_ts,
                    false
                )
                ON CONFLICT (dedup_key) DO NOTHING;
            END IF;
        END LOOP;
    END LOOP;
    RETURN new_event_id;
END
$$
"""
EVENT_COLUMNS = (
    "request_id, kind, ts, person_id, team_id, key_id, cost_center, provider, model, "
    "endpoint_mode, input_tokens, cache_read_tokens, cache_write_tokens, cache_write_1h_tokens, "
    "output_tokens, reasoning_tokens, tool_calls, search_calls, estimated, cost_nanos, "
    "estimate_nanos, external_cost_nanos, card_version, outcome, enforced, labels, trace_id, "
    "retry_of, end_user, reservation_id, flags, row_hash"
)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(RESERVE)
        op.execute(SETTLE.replace("COLUMNS", EVENT_COLUMNS))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "DROP FUNCTION IF EXISTS allotment_reserve("
            "bigint[], bigint, text, text, text, text, timestamptz, timestamptz, text)"
        )
        op.execute(
            "DROP FUNCTION IF EXISTS allotment_settle("
            "text, bigint, bigint, bigint[], jsonb, text[], timestamptz, text[])"
        )
