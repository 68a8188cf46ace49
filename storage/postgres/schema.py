"""The PostgreSQL schema: its own ordered list of numbered migrations, recorded in `schema_migrations`.

Version numbers count PostgreSQL's migrations only (SQLite's list, `storage.schema`, has its own
history from before versioning). `migrate()` runs at start-up in one transaction holding an
advisory lock, so servers starting together migrate once; a database migrated by a newer server
(`version > LATEST`) is refused (`SchemaTooNew`), never touched.

Adding PostgreSQL-only tables (leases, a server registry, shared engine state): append
`Migration(LATEST + 1, "what it adds", function)` to `MIGRATIONS`, where `function(session)` runs
its DDL with `session.execute(sql)` (shared-SQL placeholders, see `storage.postgres.session`).
Never edit a migration that has shipped. Tables that only PostgreSQL mode needs belong here
and nowhere else; the store's own tables must keep the columns SQLite's layout has.
"""
from __future__ import annotations

from datetime import datetime, timezone
from storage.dialect import SEARCH_DOCUMENT
from storage.coordination_schema import install as install_shared_tables
from storage.errors import SchemaTooNew
from storage.postgres.session import Session
from storage.schema import V1_STATEMENTS as SQLITE_V1
from storage.schema import Migration

MIGRATION_LOCK = 7_104_202_611   # pg_advisory_xact_lock key: one migrating server at a time

# Version 1: SQLite's version-1 tables (`storage.schema.V1_STATEMENTS`, frozen), in PostgreSQL's types,
# plus what SQLite added later and PostgreSQL has from the start: the unique question key, the
# full-text index (a GIN index on `SEARCH_DOCUMENT`), the write check's table, and a `seq` on batches
# (SQLite orders them by rowid).
_TYPES = (("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"),
          (" INTEGER", " BIGINT"), (" REAL", " DOUBLE PRECISION"), (" BLOB", " BYTEA"))


def postgres_ddl(statement: str) -> str:
    """A SQLite DDL statement of the shared layout in PostgreSQL's types."""
    for sqlite_type, postgres_type in _TYPES:
        statement = statement.replace(sqlite_type, postgres_type)
    return statement


V1_STATEMENTS = (
    *(postgres_ddl(statement) for statement in SQLITE_V1),
    "ALTER TABLE samples ADD COLUMN question_key BYTEA",
    "ALTER TABLE samples ADD CONSTRAINT samples_question_key_unique UNIQUE (question_key)",
    f"CREATE INDEX samples_search ON samples USING GIN ({SEARCH_DOCUMENT})",
    "ALTER TABLE batches ADD COLUMN seq BIGINT GENERATED ALWAYS AS IDENTITY",
    "CREATE TABLE storage_probe (id INTEGER PRIMARY KEY, at TEXT NOT NULL, filler BYTEA)",
)


def _create_v1(session: Session) -> None:
    for statement in V1_STATEMENTS:
        session.execute(statement)


CHANGE_LOG_STATEMENTS = (
    """CREATE TABLE sample_changes (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
        at TIMESTAMPTZ NOT NULL DEFAULT now(),
        origin TEXT,
        kind TEXT NOT NULL,
        id TEXT NOT NULL
    )""",
    "CREATE INDEX sample_changes_xid ON sample_changes (xid)",
    "CREATE INDEX sample_changes_at ON sample_changes (at)",
    """CREATE FUNCTION log_sample_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO sample_changes (origin, kind, id) VALUES (current_setting('uklaw.origin', true), lower(TG_OP),
            CASE WHEN TG_OP = 'DELETE' THEN OLD.id ELSE NEW.id END);
        RETURN NULL;
    END $$""",
    "CREATE TRIGGER samples_log_change AFTER INSERT OR UPDATE OR DELETE ON samples "
    "FOR EACH ROW EXECUTE FUNCTION log_sample_change()",
)


def _create_change_log(session: Session) -> None:
    for statement in CHANGE_LOG_STATEMENTS:
        session.execute(statement)


# Each sample's JSON as a read returns it (`Store.iter_json`), written by the store with every add
# and update; a row changed or deleted by other means loses it (the trigger), so it is never stale.
JSON_STATEMENTS = (
    "CREATE TABLE samples_json (seq BIGINT PRIMARY KEY, body BYTEA NOT NULL)",
    """CREATE FUNCTION drop_sample_json() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        DELETE FROM samples_json WHERE seq = OLD.seq;
        RETURN NULL;
    END $$""",
    "CREATE TRIGGER samples_json_drop AFTER UPDATE OR DELETE ON samples FOR EACH ROW EXECUTE FUNCTION drop_sample_json()",
)


def _create_json_table(session: Session) -> None:
    for statement in JSON_STATEMENTS:
        session.execute(statement)


def _create_shared_tables(session: Session) -> None:
    install_shared_tables(session.connection)   # raw psycopg: the DDL holds literal `%`


def _add_text_lengths(session: Session) -> None:
    """Each searchable text's length in a stored generated column, so the statistics frame reads
    small integers instead of decompressing every row's long texts (TOAST) to measure them."""
    from storage.schema import TEXT_LENGTHS

    for field in TEXT_LENGTHS:
        session.execute(f"ALTER TABLE samples ADD COLUMN IF NOT EXISTS {field}_length INTEGER "
                        f"GENERATED ALWAYS AS (coalesce(char_length({field}), 0)) STORED")


def _create_shared_learning(session: Session) -> None:
    """What servers learn together: the completion-token samples budgets are learned from
    (`storage.shared_budgets`) and the half-open probe claims (`storage.shared_probes`)."""
    from storage.shared_budgets import STATEMENTS as BUDGET_STATEMENTS
    from storage.shared_probes import STATEMENTS as PROBE_STATEMENTS

    for statement in (*BUDGET_STATEMENTS, *PROBE_STATEMENTS):
        session.execute(statement)


def _create_stats_snapshot(session: Session) -> None:
    from storage.postgres.stats_snapshot import install

    install(session)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "samples (unique id and question key, full-text index), batches, batch_attempts, storage_probe",
              _create_v1),
    Migration(2, "sample_changes: every sample write, logged by a trigger, for other servers (changes.ChangeFeed)",
              _create_change_log),
    Migration(3, "samples_json: every sample's JSON ready to send, written by the store", _create_json_table),
    Migration(4, "several servers: servers, batch_lease, engine_cooldowns, engine_disabled, limiter_state, "
                 "the batch-row fence trigger", _create_shared_tables),
    Migration(5, "samples.<text>_length: stored generated lengths for the statistics", _add_text_lengths),
    Migration(6, "several servers: budget_samples (pooled completion tokens), half_open_probes (one probe "
                 "system-wide per unproven model)", _create_shared_learning),
    Migration(7, "stats_snapshot: the statistics frame's columns as of a change-log position, and "
                 "change_log_pruned: how far the log was pruned (stats_snapshot)", _create_stats_snapshot),
)
LATEST = MIGRATIONS[-1].version

VERSION_TABLE = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at TEXT NOT NULL
)"""


def recorded_version(session: Session) -> int | None:
    """The database's schema version; None if it has none (a new database)."""
    if session.execute("SELECT to_regclass('schema_migrations')").fetchone()[0] is None:
        return None
    return session.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0]


def migrate(session: Session, where: str, migrations: tuple[Migration, ...] = MIGRATIONS) -> int:
    """Bring the database to the last of `migrations` (default `LATEST`); returns that version.
    `session` is in autocommit mode; the work is one transaction. `where`: the redacted URL."""
    latest = migrations[-1].version
    found = recorded_version(session)
    if found is not None and found > latest:
        raise SchemaTooNew(where, found, latest, setting="DATABASE_URL")
    if found == latest:
        return latest
    # A session-level lock taken before the transaction begins: a transaction that starts after
    # another server's migration committed sees its tables (catalog caches refresh at BEGIN).
    session.execute("SELECT pg_advisory_lock(?)", (MIGRATION_LOCK,))
    try:
        with session.connection.transaction():
            found = recorded_version(session) or 0   # again, under the lock: another server may have migrated
            if found > latest:
                raise SchemaTooNew(where, found, latest, setting="DATABASE_URL")
            session.execute(VERSION_TABLE)
            for migration in migrations:
                if migration.version > found:
                    migration.apply(session)
                    session.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                                    (migration.version, migration.name, datetime.now(timezone.utc).isoformat()))
    finally:
        session.execute("SELECT pg_advisory_unlock(?)", (MIGRATION_LOCK,))
    return latest
