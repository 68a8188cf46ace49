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

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

from storage.coordination_schema import install as install_shared_tables
from storage.errors import SchemaTooNew
from storage.postgres.session import Session
from storage.dialect import SEARCH_DOCUMENT

MIGRATION_LOCK = 7_104_202_611   # pg_advisory_xact_lock key: one migrating server at a time

V1_STATEMENTS = (
    """CREATE TABLE samples (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id TEXT NOT NULL,
        question TEXT NOT NULL,
        answer TEXT NOT NULL,
        reasoning TEXT NOT NULL,
        case_citation TEXT NOT NULL,
        topic TEXT NOT NULL,
        difficulty TEXT NOT NULL,
        sample_type TEXT,
        provider TEXT,
        model TEXT,
        batch_id TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        prompt_tokens BIGINT,
        completion_tokens BIGINT,
        latency DOUBLE PRECISION,
        attempts BIGINT,
        simulated SMALLINT NOT NULL DEFAULT 0,
        quality_score DOUBLE PRECISION,
        quality_flags TEXT,
        duplicate_of TEXT,
        extra TEXT,
        question_key BYTEA,
        CONSTRAINT samples_id_unique UNIQUE (id),
        CONSTRAINT samples_question_key_unique UNIQUE (question_key)
    )""",
    "CREATE INDEX samples_batch ON samples(batch_id)",
    "CREATE INDEX samples_topic ON samples(topic)",
    "CREATE INDEX samples_difficulty ON samples(difficulty)",
    f"CREATE INDEX samples_search ON samples USING GIN ({SEARCH_DOCUMENT})",
    """CREATE TABLE batches (
        seq BIGINT GENERATED ALWAYS AS IDENTITY,
        id TEXT PRIMARY KEY,
        status TEXT NOT NULL,
        started_at TEXT NOT NULL,
        completed_at TEXT,
        updated_at TEXT NOT NULL,
        state TEXT NOT NULL
    )""",
    "CREATE INDEX batches_status ON batches(status)",
    """CREATE TABLE batch_attempts (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        batch_id TEXT NOT NULL,
        slot INTEGER NOT NULL,
        provider TEXT,
        model TEXT,
        outcome TEXT NOT NULL,
        category TEXT,
        latency DOUBLE PRECISION,
        prompt_tokens BIGINT,
        completion_tokens BIGINT,
        message TEXT,
        sample_id TEXT,
        at TEXT NOT NULL
    )""",
    "CREATE INDEX batch_attempts_batch ON batch_attempts(batch_id)",
    "CREATE TABLE storage_probe (id INTEGER PRIMARY KEY, at TEXT NOT NULL, filler BYTEA)",
)

# The constraint a duplicate insert breaks, by the column it guards.
UNIQUE_CONSTRAINTS = {"samples_id_unique": "id", "samples_question_key_unique": "question_key"}


def _create_v1(session: Session) -> None:
    for statement in V1_STATEMENTS:
        session.execute(statement)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    apply: Callable[[Session], None]


def _create_v2(session: Session) -> None:
    install_shared_tables(session.connection)   # raw psycopg: the DDL holds literal `%`


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "samples (unique id and question key, full-text index), batches, batch_attempts, storage_probe",
              _create_v1),
    Migration(2, "several servers: servers, batch_lease, engine_cooldowns, engine_disabled, limiter_state, "
                 "the batch-row fence trigger", _create_v2),
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
