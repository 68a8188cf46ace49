"""Storage: the only package that talks to the database. Nothing outside it runs SQL.

Two backends behind one interface; callers work only with plain values (dicts, lists,
`BatchState`), never with driver types, and get a store from `open_storage(settings)`:
- SQLite (default): one file in DATA_DIR (`database.Database`: per-thread connections, write
  transactions, `schema`'s migrations);
- PostgreSQL (`DATABASE_URL=postgresql://...`): `postgres.PostgresDatabase` (a psycopg 3
  connection pool, `postgres.schema`'s migrations, a GIN full-text index).
`Store` and `BatchRepository` are written once against the database interface both implement:
    reading() / transaction()      -> a session: execute(sql, params), executemany(sql, rows)
    stream(sql, params, chunk)     -> rows, a chunk at a time (PostgreSQL: a server-side cursor)
    write_problem(), writable(), size_bytes(), describe(), close()
    dialect (what differs: `dialect.Dialect`), IntegrityError, schema_version, path/where
SQL is written in SQLite's style (`?`, `:name`); the PostgreSQL session translates placeholders.
Rows read by index and by name on both. Each backend records its schema version in
`schema_migrations` and refuses a database newer than it knows (`SchemaTooNew`).

PostgreSQL-only tables (leases, server registry, shared engine state): append a `Migration`
to `storage.postgres.schema.MIGRATIONS` (its docstring says how) and reach the pool through
`store.database` (`transaction()` for a short locked write: `SELECT ... FOR UPDATE` or
`pg_advisory_xact_lock`). `store.database.dialect.name` says which backend runs.
What several servers share besides the dataset (migration 2, `coordination_schema`), each reached
through `coordination.shared_connect(store.database)` (None on SQLite):
    coordination.ServerRegistry(connect, server_id, live_seconds): heartbeat(address), live(), leave()
    coordination.BatchLeases(connect, server_id, lease_seconds): acquire(batch_id) -> None | holder's
        batch id; renew(batch_id) -> "held" | "stop" | "lost"; release; hand_over; take_over() -> Lease;
        request_stop(batch_id); holder()
    shared_health.SharedHealthTable(connect): cool(...), disable(...), active()
    shared_limiter.PostgresLimiterStore(connect, decode): transact(keys, fn), read()
and the fence: every store connection names its server (`PostgresDatabase(url, server=...)`), and
a trigger refuses a batch's row from any server but its lease holder (`NotLeaseHolder`).

Exact duplicates: `question_key` (the normalised question, `storage.question_key`, the same
normalisation `quality.duplicates` uses) is a column with a unique constraint on both backends,
so one question can never be stored twice, even by two servers at the same instant: `add`,
`add_many` and `update` raise `DuplicateQuestion` (naming the sample that holds it).

Schema (`schema`): every table in one ordered list of numbered migrations, recorded in
`schema_migrations`, applied when a store opens; files from before versioning are adopted.

`records`, the stored sample's one schema: `check_record(record)` (types, lengths and shapes of
every field, metadata and extra fields included; `InvalidRecord` naming each bad field). Every
write below passes through it, and the web layer's request models use its field types. Rows an
older version stored with values of the wrong type are repaired on every read (`repair_record`,
`repair_column`: a count that is text reads as null, unreadable flags as []), so one row never
breaks a listing, a statistic or an export; `damaged_rows()` names them.

`store.Store(path | database)`, the samples:
    add(record) / add_many(records) -> stored records      (DuplicateId on a known id; DuplicateQuestion;
                                                            InvalidRecord; all or nothing)
    update(id, changes) -> record | None                    (merge, check, refresh updated_at)
    delete(id) -> bool
    get(id) -> record | None; exists(ids) -> set of ids present
    count(filters) / list(filters, limit, offset, newest_first) / iter_records(...) / random(n, filters)
    search(text, field, limit)                              (case-insensitive substring, never a regex)
    iter_questions() -> (id, question) pairs in insertion order
    columns(fields, lengths=, filters=) -> {name: [values]} (column-wise read; lengths of texts, not texts)
    damaged_rows(limit) / damaged_count()                   (rows an older version stored with wrong types)
    on_change(listener) and `version`                       (a `Change` after every commit; a cache key)
    write_problem() -> None | "cannot write FILE: reason; what to do"   (a small real write, short lock wait)
    writable() -> bool; size_bytes() -> int; close()
  Filters: topic, difficulty, sample_type, provider, model, batch_id, practice_area, simulated,
  flag, exclude_flags, min_score, ids.

`batches.BatchRepository(store)`, batches and their attempt log (same database):
    save(state); get(batch_id); with_status(status); history(limit); stored_samples(batch_id)
    log_attempts(batch_id, slot, attempts, sample_id); attempts(batch_id, limit); rejection_counts()

`errors`: StoreError, DuplicateId, DuplicateQuestion, InvalidRecord (a record breaking `records`' rules), SchemaError, SchemaTooNew (a database newer than this server),
WriteFailed (disk full, read-only, failing disk, lock held too long: the write changed nothing);
at start-up DatabaseDamaged (truncated, garbage header, PRAGMA quick_check failed) and
DatabaseUnwritable (read-only file or directory, no space), each one line: file, problem, fix;
DatabaseUnavailable (PostgreSQL unreachable, wrong credentials, no such database, missing
privileges): one line naming the URL without its password.
`Database.limit_pages(n)` caps the file's growth (SQLite's max_page_count): a real "disk full" for tests.

Layering: storage imports only `config`, `state` and libraries, never a package above it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from config.settings import Settings
    from storage.store import Store


def open_storage(settings: "Settings") -> "Store":
    """The store the settings name: PostgreSQL when DATABASE_URL is set, else SQLite in DATA_DIR.
    Raises a one-line `StoreError` when the database cannot be used."""
    from storage.store import Store

    if settings.database_url:
        from storage.coordination import server_id
        from storage.postgres import PostgresDatabase

        # a connection per request thread, with room for a batch's workers and the warm-up; each
        # connection names this server (the batch-row fence of `storage.coordination`)
        return Store(PostgresDatabase(settings.database_url, max_size=settings.threads + 8,
                                      server=server_id(settings.port)))
    return Store(settings.database_path)
