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
    shared_budgets.SharedBudgetSamples(connect): append(provider, model, tokens, cut_off), since(horizon), prune
    shared_probes.SharedProbes(connect, server, seconds=): claim(provider, model) -> owner | None, release
(migration 6 holds the last two). While the server is away every call of either pool raises
`errors.DatabaseUnreachable` (a `WriteFailed`) within about two seconds (`postgres.lending`), and
`store.check_reachable()` raises it for answers served from memory.
and the fence: every store connection names its server (`PostgresDatabase(url, server=...)`), and
a trigger refuses a batch's row from any server but its lease holder (`NotLeaseHolder`).

Several servers on one PostgreSQL database: each store follows the others' sample writes
(`postgres.changes.ChangeFeed`: a trigger-fed log polled every second) and passes them to its
listeners as `Change` events, so every server's statistics frame and duplicate index stay current.

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
    iter_json(filters, limit=, offset=, newest_first=) -> pieces of comma-joined JSON records (what
                                                            iter_records yields, encoded; the body of an array)
    columns(fields, lengths=, filters=) -> {name: [values]} (column-wise read; lengths of texts, not texts)
    column_arrays(fields, lengths=) -> {name: JSON array text} | None   (SQLite: the same, built by the database,
                                                            for Polars; None if a row needs repairing: use columns)
    column_csv(fields, lengths=) -> ColumnCsv | None        (PostgreSQL: the same as CSV lines from COPY, the
                                                            saved snapshot's and the rows changed since; SQLite: None)
    iter_json_zstd() -> zstd stream of the whole JSON array   (blocks compressed when written, the rest on the way)
    seal_json(force=False) -> rows compressed into blocks     (add_many seals as it writes; see json_blocks)
    recompress_json_block(level=19, stop=) -> (bytes before, after) | None   (one block compressed again,
                                                            smaller, outside any transaction; dataset.recompress)
    damaged_rows(limit) / damaged_count()                   (rows an older version stored with wrong types)
    on_change(listener) and `version`                       (a `Change` after every commit; a cache key)
    write_problem() -> None | "cannot write FILE: reason; what to do"   (a small real write, short lock wait)
    writable() -> bool; size_bytes() -> int; close()
  Filters: topic, difficulty, sample_type, provider, model, batch_id, practice_area, simulated,
  flag, exclude_flags, min_score, ids.
  Two copies serve the big reads (schema migrations 4 and 6; 5 added a third copy, every row's
  JSON uncompressed, which 7 drops); a backend may keep them any way that gives the same answers:
  - the light table (`samples_light`): every column but the four long texts and `extra`, plus the
    character length of question, answer, reasoning, case_citation and topic (`<field>_length`),
    kept by triggers on insert/update/delete, and `damaged` (1 when a short column holds a value of
    the wrong type, which only a write outside the store can leave; a partial index finds them).
    `count`, `columns` and `column_arrays` (the statistics frame) read it, so none touches the
    texts; `columns` falls back to the samples table for any other field.
  - the compressed blocks (`samples_json_blocks`, `json_blocks`): the JSON of 1,024 consecutive
    rows, each encoded by `store.encode_record` (orjson, compact UTF-8) exactly as a read returns
    it, joined by commas and zstd-compressed when the rows are written (in `add_many`'s transaction,
    once 1,024 rows follow the last block; `seal_json` for rows stored before the blocks existed).
    A change to a row, by the store or not, drops its block (triggers); the next seal rebuilds it. `iter_json_zstd` sends the blocks as stored and compresses the rows between them
    on the way (one stream of zstd frames); `iter_json` of the whole dataset decompresses them.
    Blocks are sealed at zstd level 7 (fast enough for a write) and later compressed again at 19
    (about 15% smaller, 1-2 MB/s) in idle time; `level` (migration 9) says which each one is. A
    recompressed body replaces its block only if the block still holds what was read.
  PostgreSQL keeps each row's ready JSON beside it (`samples_json`, its own migration 3) and reads
  counts and columns from the typed `samples` table (its long texts sit out of line); the
  statistics frame reads `column_csv` (COPY as CSV; `column_arrays` is None there), from the
  statistics snapshot and the rows changed since (`postgres.stats_snapshot`, migration 7); it keeps no blocks (concurrent writers commit out of seq order, so a sealed
  range could miss a late row): `iter_json_zstd` compresses every row on the way. `dialect.Dialect` says which.

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
