"""The PostgreSQL tables several servers share besides the dataset: the server registry, the batch
lease, the engine's cooldowns and disabled keys, and the rate-limit state.

`STATEMENTS` is idempotent (`IF NOT EXISTS`, `CREATE OR REPLACE`); `install(db)` runs it under a
transaction-wide advisory lock, so servers starting together do not race each other's DDL. The
fencing trigger is added only once the `samples` table exists.
"""
from __future__ import annotations

import psycopg

LOCK_KEY = 0x756B6C6177   # "uklaw": the advisory lock held while the tables are created

STATEMENTS: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS servers (
        id text PRIMARY KEY,
        address text,
        started_at timestamptz NOT NULL,
        heartbeat_at timestamptz NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS batch_lease (
        slot smallint PRIMARY KEY CHECK (slot = 1),
        batch_id text NOT NULL UNIQUE,
        owner text NOT NULL,
        expires_at timestamptz NOT NULL,
        acquired_at timestamptz NOT NULL DEFAULT clock_timestamp(),
        takeovers integer NOT NULL DEFAULT 0,
        stop_requested boolean NOT NULL DEFAULT false
    )""",
    # model '' is the whole provider
    """CREATE TABLE IF NOT EXISTS engine_cooldowns (
        provider text NOT NULL,
        model text NOT NULL,
        until timestamptz NOT NULL,
        category text,
        reason text,
        message text,
        switched boolean NOT NULL DEFAULT false,
        PRIMARY KEY (provider, model)
    )""",
    """CREATE TABLE IF NOT EXISTS engine_disabled (
        provider text PRIMARY KEY,
        fingerprint text NOT NULL,
        category text,
        message text,
        since timestamptz NOT NULL DEFAULT clock_timestamp()
    )""",
    # the rate limiter's records (`storage.shared_limiter`): one per scope key, e.g. "groq/llama-3.1-8b"
    """CREATE TABLE IF NOT EXISTS limiter_state (
        key text PRIMARY KEY,
        state jsonb NOT NULL
    )""",
    """CREATE OR REPLACE FUNCTION uklaw_fence_batch_sample() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        me text := coalesce(current_setting('uklaw.server_id', true), '');
        holder text;
    BEGIN
        IF NEW.batch_id IS NULL OR me = '' THEN
            RETURN NEW;
        END IF;
        SELECT owner INTO holder FROM batch_lease WHERE batch_id = NEW.batch_id FOR SHARE;
        IF FOUND AND holder <> me THEN
            RAISE EXCEPTION 'batch % is run by server %, not by %', NEW.batch_id, holder, me
                USING ERRCODE = '55000';
        END IF;
        RETURN NEW;
    END $$""",
)

FENCE = ("DO $$ BEGIN IF to_regclass('samples') IS NOT NULL AND NOT EXISTS ("
         "SELECT 1 FROM pg_trigger WHERE tgname = 'samples_batch_fence' AND tgrelid = to_regclass('samples')) THEN "
         "CREATE TRIGGER samples_batch_fence BEFORE INSERT ON samples FOR EACH ROW "
         "EXECUTE FUNCTION uklaw_fence_batch_sample(); END IF; END $$")


def install(db: psycopg.Connection) -> None:
    """Create what is missing, in the connection's current transaction (the caller commits)."""
    db.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
    for statement in STATEMENTS:
        db.execute(statement)
    db.execute(FENCE)
