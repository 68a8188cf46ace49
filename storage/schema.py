"""The database schema, in one place: an ordered list of numbered migrations.

`migrate()` runs when a database is opened. It reads the file's version (the highest `version` in
`schema_migrations`, one row per applied migration with its name and time), refuses a file newer
than `LATEST` (`SchemaTooNew`), and otherwise applies the missing migrations in order, each once,
all inside one write transaction: a file ends at `LATEST` or stays as it was.

Files made before versioning have the tables but no `schema_migrations`, and possibly lack
columns added later. `adopt_pre_versioning` brings such a file to version 1 in place (creating
the tables it lacks and adding `PRE_VERSIONING_COLUMNS`), keeping every row, then checks that
its layout matches version 1; the migrations after 1 then run as for any other file.

A new migration: append `Migration(LATEST + 1, "what it changes", function)`; never edit one
that has shipped.
"""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from storage.dialect import SEARCH_COLUMNS  # shared with PostgreSQL's index
from storage.errors import SchemaError, SchemaTooNew
from storage.records import MAX_COUNT
from storage.repairs import COUNT_COLUMNS, NUMBER_COLUMNS, OPTIONAL_TEXT_COLUMNS, TEXT_COLUMNS

VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at TEXT NOT NULL
)"""

# Version 1: the layout of the last release before versioning. `IF NOT EXISTS` throughout, so the
# same statements adopt a pre-versioning file (creating only what it lacks).
V1_STATEMENTS = (
    """CREATE TABLE IF NOT EXISTS samples (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
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
        prompt_tokens INTEGER,
        completion_tokens INTEGER,
        latency REAL,
        attempts INTEGER,
        simulated INTEGER NOT NULL DEFAULT 0,
        quality_score REAL,
        quality_flags TEXT,
        duplicate_of TEXT,
        extra TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS samples_batch ON samples(batch_id)",
    "CREATE INDEX IF NOT EXISTS samples_topic ON samples(topic)",
    "CREATE INDEX IF NOT EXISTS samples_difficulty ON samples(difficulty)",
    """CREATE TABLE IF NOT EXISTS batches (
        id TEXT PRIMARY KEY,
        status TEXT NOT NULL,
        started_at TEXT NOT NULL,
        completed_at TEXT,
        updated_at TEXT NOT NULL,
        state TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS batches_status ON batches(status)",
    """CREATE TABLE IF NOT EXISTS batch_attempts (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        batch_id TEXT NOT NULL,
        slot INTEGER NOT NULL,
        provider TEXT,
        model TEXT,
        outcome TEXT NOT NULL,
        category TEXT,
        latency REAL,
        prompt_tokens INTEGER,
        completion_tokens INTEGER,
        message TEXT,
        sample_id TEXT,
        at TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS batch_attempts_batch ON batch_attempts(batch_id)",
)
V1_TABLES = ("samples", "batches", "batch_attempts")

# Columns that pre-versioning releases added to existing files with ALTER TABLE: (table, column, type).
PRE_VERSIONING_COLUMNS = (("samples", "duplicate_of", "TEXT"),)


def _create_v1(db: sqlite3.Connection) -> None:
    for statement in V1_STATEMENTS:
        db.execute(statement)


@dataclass(frozen=True)
class Migration:
    """One numbered schema change; `apply(connection)` runs its statements (a sqlite3 connection
    here, a PostgreSQL session in `storage.postgres.schema`, which uses this class too)."""
    version: int
    name: str
    apply: Callable[[Any], None]
    undone_by: int | None = None   # a later migration that removes what this one adds: a file that
                                   # gets both in one go only records this one (no pages left free)


def _create_storage_probe(db: sqlite3.Connection) -> None:
    db.execute("CREATE TABLE IF NOT EXISTS storage_probe (id INTEGER PRIMARY KEY, at TEXT NOT NULL, filler BLOB)")


# The full-text index over the searchable text, kept in step with `samples` by triggers. Words are
# unicode61 tokens without diacritics; `Store.search` quotes the query, so it is never a query language.


def _create_search_index(db: sqlite3.Connection) -> None:
    columns = ", ".join(SEARCH_COLUMNS)
    new = ", ".join(f"new.{c}" for c in SEARCH_COLUMNS)
    old = ", ".join(f"old.{c}" for c in SEARCH_COLUMNS)
    db.execute(f"CREATE VIRTUAL TABLE samples_fts USING fts5({columns}, content='samples', content_rowid='seq', "
               "tokenize='unicode61 remove_diacritics 2')")
    db.execute(f"CREATE TRIGGER samples_fts_insert AFTER INSERT ON samples BEGIN "
               f"INSERT INTO samples_fts(rowid, {columns}) VALUES (new.seq, {new}); END")
    db.execute(f"CREATE TRIGGER samples_fts_delete AFTER DELETE ON samples BEGIN "
               f"INSERT INTO samples_fts(samples_fts, rowid, {columns}) VALUES ('delete', old.seq, {old}); END")
    db.execute(f"CREATE TRIGGER samples_fts_update AFTER UPDATE OF {columns} ON samples BEGIN "
               f"INSERT INTO samples_fts(samples_fts, rowid, {columns}) VALUES ('delete', old.seq, {old}); "
               f"INSERT INTO samples_fts(rowid, {columns}) VALUES (new.seq, {new}); END")
    db.execute("INSERT INTO samples_fts(samples_fts) VALUES ('rebuild')")   # rows stored before this version


# A narrow copy of every sample's short columns and text lengths, kept in step with `samples` by
# triggers: statistics, counts and filters read it without touching the texts (in `samples` the short
# columns sit after the long texts, so reading them there reads every page of every row).
TEXT_LENGTHS = ("question", "answer", "reasoning", "case_citation", "topic")
LIGHT_COLUMNS = ("id", "topic", "difficulty", "sample_type", "provider", "model", "batch_id", "created_at",
                 "updated_at", "prompt_tokens", "completion_tokens", "latency", "attempts", "simulated",
                 "quality_score", "quality_flags", "duplicate_of")


def damaged_checks(row: str = "") -> dict[str, str]:
    """Per column, SQL true for a value of the wrong type (a superset check, confirmed in Python by
    `storage.repairs.repair_record`); `row` prefixes the column names (`new.` in a trigger)."""
    def c(name: str) -> str:
        return f"{row}{name}"

    checks = {name: f"typeof({c(name)}) != 'text'" for name in TEXT_COLUMNS}
    checks |= {name: f"typeof({c(name)}) NOT IN ('text', 'null')" for name in OPTIONAL_TEXT_COLUMNS}
    checks |= {name: f"(typeof({c(name)}) NOT IN ('integer', 'null') OR {c(name)} < 0 OR {c(name)} > {MAX_COUNT})"
               for name in COUNT_COLUMNS}
    checks |= {name: f"(typeof({c(name)}) NOT IN ('real', 'integer', 'null') OR abs({c(name)}) > 1e308)"
               for name in NUMBER_COLUMNS}
    checks["simulated"] = f"typeof({c('simulated')}) != 'integer' OR {c('simulated')} NOT IN (0, 1)"
    flags = c("quality_flags")
    checks["quality_flags"] = (
        f"({flags} IS NOT NULL AND {flags} != '' AND {flags} != '[]' AND CASE WHEN typeof({flags}) = 'text' "
        f"AND json_valid({flags}) THEN json_type({flags}) != 'array' OR EXISTS (SELECT 1 FROM "
        f"json_each({flags}) WHERE type != 'text') ELSE 1 END)")
    extra = c("extra")
    checks["extra"] = (f"({extra} IS NOT NULL AND {extra} != '' AND CASE WHEN typeof({extra}) = 'text' AND "
                       f"json_valid({extra}) THEN json_type({extra}) != 'object' ELSE 1 END)")
    return checks


def light_length(field: str) -> str:
    """The `samples_light` column holding the character length of `field`."""
    return f"{field}_length"


def _create_light_table(db: sqlite3.Connection) -> None:
    lengths = [light_length(f) for f in TEXT_LENGTHS]
    db.execute(f"CREATE TABLE samples_light (seq INTEGER PRIMARY KEY, {', '.join(LIGHT_COLUMNS)}, "
               f"{', '.join(f'{c} INTEGER NOT NULL' for c in lengths)}, damaged INTEGER NOT NULL)")
    columns = ", ".join(("seq", *LIGHT_COLUMNS, *lengths, "damaged"))

    def values(row: str) -> str:
        """The light row of `row`; `damaged` says whether any of its short columns holds a value of
        the wrong type (only a write outside the store can store one)."""
        damaged = " OR ".join(f"({check})" for name, check in damaged_checks(f"{row}.").items()
                              if name in LIGHT_COLUMNS)
        return ", ".join((f"{row}.seq", *(f"{row}.{c}" for c in LIGHT_COLUMNS),
                          *(f"coalesce(length({row}.{f}), 0)" for f in TEXT_LENGTHS), f"coalesce({damaged}, 0)"))

    db.execute(f"CREATE TRIGGER samples_light_insert AFTER INSERT ON samples BEGIN "
               f"INSERT INTO samples_light ({columns}) VALUES ({values('new')}); END")
    db.execute("CREATE TRIGGER samples_light_delete AFTER DELETE ON samples BEGIN "
               "DELETE FROM samples_light WHERE seq = old.seq; END")
    db.execute(f"CREATE TRIGGER samples_light_update AFTER UPDATE ON samples BEGIN "
               f"DELETE FROM samples_light WHERE seq = old.seq; "
               f"INSERT INTO samples_light ({columns}) VALUES ({values('new')}); END")
    db.execute(f"INSERT INTO samples_light ({columns}) SELECT {values('samples')} FROM samples")
    db.execute("CREATE INDEX samples_light_batch ON samples_light(batch_id)")
    db.execute("CREATE INDEX samples_light_damaged ON samples_light(seq) WHERE damaged")


# Version 5 (shipped, then replaced by the blocks alone): each sample's JSON, written by the store.
def _create_json_table(db: sqlite3.Connection) -> None:
    db.execute("CREATE TABLE samples_json (seq INTEGER PRIMARY KEY, body BLOB NOT NULL)")
    db.execute("CREATE TRIGGER samples_json_delete AFTER DELETE ON samples BEGIN "
               "DELETE FROM samples_json WHERE seq = old.seq; END")
    db.execute("CREATE TRIGGER samples_json_update AFTER UPDATE ON samples BEGIN "
               "DELETE FROM samples_json WHERE seq = old.seq; END")


def _drop_json_table(db: sqlite3.Connection) -> None:
    db.execute("DROP TRIGGER IF EXISTS samples_json_delete")
    db.execute("DROP TRIGGER IF EXISTS samples_json_update")
    db.execute("DROP TABLE IF EXISTS samples_json")


# Each row's JSON as a read returns it, compressed in blocks of consecutive rows (`storage.json_blocks`:
# the whole `/api/data` array). A block holding a row that changes, or a seq inserted into its range,
# is dropped: it is never served stale.
def _create_json_blocks(db: sqlite3.Connection) -> None:
    db.execute("CREATE TABLE samples_json_blocks (first_seq INTEGER PRIMARY KEY, last_seq INTEGER NOT NULL, "
               "rows INTEGER NOT NULL, body BLOB NOT NULL)")
    for event, row in (("INSERT", "new"), ("UPDATE", "old"), ("DELETE", "old")):
        db.execute(f"CREATE TRIGGER samples_json_blocks_{event.lower()} AFTER {event} ON samples BEGIN "
                   f"DELETE FROM samples_json_blocks WHERE first_seq = (SELECT max(first_seq) FROM "
                   f"samples_json_blocks WHERE first_seq <= {row}.seq) AND last_seq >= {row}.seq; END")


def _add_question_key(db: sqlite3.Connection) -> None:
    """The normalised question's key (`storage.question_key`) in a column with a unique index, so
    an exact duplicate can never be stored twice. Rows stored before keep their key, except the
    second and later of an exact duplicate an older version let in: those keep none (and are
    reported), because a unique index cannot hold them."""
    from storage.question_key import question_key

    if "question_key" not in _columns(db, "samples"):
        db.execute("ALTER TABLE samples ADD COLUMN question_key BLOB")
    db.execute("DROP INDEX IF EXISTS samples_question_key")
    seen: set[bytes] = set()
    keys, repeated = [], 0
    for seq, question in db.execute("SELECT seq, question FROM samples ORDER BY seq").fetchall():
        key = question_key(question)
        if key is not None and key in seen:
            key, repeated = None, repeated + 1
        elif key is not None:
            seen.add(key)
        if key is not None:
            keys.append((key, seq))
    # The update triggers drop a changed row's compressed block: the records do not change here (the
    # key is no field of theirs), so the blocks are kept aside and put back.
    db.execute("CREATE TEMP TABLE kept_blocks AS SELECT * FROM samples_json_blocks")
    db.executemany("UPDATE samples SET question_key = ? WHERE seq = ?", keys)
    db.execute("INSERT OR REPLACE INTO samples_json_blocks SELECT * FROM kept_blocks")
    db.execute("DROP TABLE kept_blocks")
    db.execute("CREATE UNIQUE INDEX samples_question_key ON samples(question_key)")
    if repeated:
        import logging

        logging.getLogger("storage").warning(
            "%d stored sample(s) repeat an earlier sample's question exactly; they are kept, without the "
            "unique question key (GET /api/stats/quality lists duplicate clusters)", repeated)


# Which zstd level each block was compressed at: blocks are sealed fast when written and compressed
# again, smaller, in the background (`json_blocks.recompress`); blocks stored before were sealed at 7.
def _add_block_level(db: sqlite3.Connection) -> None:
    if "level" not in _columns(db, "samples_json_blocks"):
        db.execute("ALTER TABLE samples_json_blocks ADD COLUMN level INTEGER NOT NULL DEFAULT 7")


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "samples, batches and batch_attempts tables", _create_v1),
    Migration(2, "storage_probe: the row the write check rewrites", _create_storage_probe),
    Migration(3, "samples_fts: full-text index of the searchable text", _create_search_index),
    Migration(4, "samples_light: short columns and text lengths of every sample, kept by triggers",
              _create_light_table),
    Migration(5, "samples_json: every sample's JSON ready to send, written by the store", _create_json_table,
              undone_by=7),
    Migration(6, "samples_json_blocks: the rows' JSON compressed in blocks, written by the store",
              _create_json_blocks),
    Migration(7, "samples_json dropped: the compressed blocks are the only ready JSON", _drop_json_table),
    Migration(8, "samples.question_key: the normalised question, unique", _add_question_key),
    Migration(9, "samples_json_blocks.level: the zstd level of each block", _add_block_level),
)
LATEST = MIGRATIONS[-1].version


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}


def _tables(db: sqlite3.Connection) -> set[str]:
    return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


@lru_cache(maxsize=1)
def _v1_layout() -> dict[str, frozenset[str]]:
    """Each version-1 table's columns, read from the DDL itself (in a scratch in-memory database)."""
    scratch = sqlite3.connect(":memory:")
    try:
        _create_v1(scratch)
        return {table: frozenset(_columns(scratch, table)) for table in V1_TABLES}
    finally:
        scratch.close()


def recorded_version(db: sqlite3.Connection) -> int | None:
    """The file's schema version; None if it has no version record (new, or pre-versioning)."""
    if "schema_migrations" not in _tables(db):
        return None
    return db.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0]


def adopt_pre_versioning(db: sqlite3.Connection, path: Path | str) -> None:
    """Bring a file made before versioning to the version-1 layout, keeping its rows: add the
    columns older releases added on the fly, then create the tables and indexes it lacks.
    `SchemaError` if a table lacks any other column (the file was not made by this application)."""
    present = _tables(db)
    for table, expected in _v1_layout().items():
        if table not in present:
            continue
        have = _columns(db, table)
        addable = {column: kind for t, column, kind in PRE_VERSIONING_COLUMNS if t == table}
        missing = expected - have - addable.keys()
        if missing:
            raise SchemaError(f"{path}: table {table} lacks column(s) {', '.join(sorted(missing))}; "
                              "the file was not made by this application")
        for column, kind in addable.items():
            if column not in have:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
    _create_v1(db)


def _record(db: sqlite3.Connection, version: int, name: str) -> None:
    db.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
               (version, name, datetime.now(timezone.utc).isoformat()))


def migrate(db: sqlite3.Connection, path: Path | str) -> int:
    """Bring the database on `db` (an autocommit connection) to `LATEST`; returns that version.
    Raises `SchemaTooNew` for a file a newer server has migrated, `SchemaError` for a foreign layout."""
    found = recorded_version(db)
    if found is not None and found > LATEST:
        raise SchemaTooNew(path, found, LATEST)
    if found == LATEST:
        return LATEST
    db.execute("BEGIN IMMEDIATE")
    try:
        found = recorded_version(db) or 0   # again, under the write lock: another process may have migrated
        if found > LATEST:
            raise SchemaTooNew(path, found, LATEST)
        db.execute(VERSION_TABLE)
        if found == 0 and _tables(db) & set(V1_TABLES):
            adopt_pre_versioning(db, path)
            _record(db, 1, f"{MIGRATIONS[0].name} (adopted a pre-versioning file)")
            found = 1
        for migration in MIGRATIONS:
            if migration.version > found:
                if migration.undone_by is None or migration.undone_by > LATEST:
                    migration.apply(db)
                _record(db, migration.version, migration.name)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:   # SQLite rolls back by itself after some errors (a full disk)
            db.execute("ROLLBACK")
        raise
    return LATEST
