"""Storage: the only package that talks to the database. Nothing outside it runs SQL.

Today's backend is one SQLite file (`database.Database`: per-thread connections, write
transactions). A PostgreSQL backend implements the same two classes and exceptions; callers
work only with plain values (dicts, lists, `BatchState`), never with driver types.

Schema (`schema`): every table in one ordered list of numbered migrations, recorded in
`schema_migrations`, applied when a store opens; files from before versioning are adopted.

`records`, the stored sample's one schema: `check_record(record)` (types, lengths and shapes of
every field, metadata and extra fields included; `InvalidRecord` naming each bad field). Every
write below passes through it, and the web layer's request models use its field types. Rows an
older version stored with values of the wrong type are repaired on every read (`repair_record`,
`repair_column`: a count that is text reads as null, unreadable flags as []), so one row never
breaks a listing, a statistic or an export; `damaged_rows()` names them.

`store.Store(path)`, the samples:
    add(record) / add_many(records) -> stored records      (DuplicateId on a known id; InvalidRecord; all or nothing)
    update(id, changes) -> record | None                    (merge, check, refresh updated_at)
    delete(id) -> bool
    get(id) -> record | None; exists(ids) -> set of ids present
    count(filters) / list(filters, limit, offset, newest_first) / iter_records(...) / random(n, filters)
    search(text, field, limit)                              (case-insensitive substring, never a regex)
    iter_questions() -> (id, question) pairs in insertion order
    iter_json(filters, limit=, offset=, newest_first=) -> pieces of comma-joined JSON records (what
                                                            iter_records yields, encoded; the body of an array)
    columns(fields, lengths=, filters=) -> {name: [values]} (column-wise read; lengths of texts, not texts)
    column_arrays(fields, lengths=) -> {name: JSON array text} | None   (the same, built by the database, for
                                                            Polars; None if a row needs repairing: use columns)
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
    (about 15% smaller, 1-2 MB/s) in idle time; `level` (migration 8) says which each one is. A
    recompressed body replaces its block only if the block still holds what was read.

`batches.BatchRepository(store)`, batches and their attempt log (same database):
    save(state); get(batch_id); with_status(status); history(limit); stored_samples(batch_id)
    log_attempts(batch_id, slot, attempts, sample_id); attempts(batch_id, limit); rejection_counts()

`errors`: StoreError, DuplicateId, InvalidRecord (a record breaking `records`' rules), SchemaError, SchemaTooNew (a database newer than this server),
WriteFailed (disk full, read-only, failing disk, lock held too long: the write changed nothing);
at start-up DatabaseDamaged (truncated, garbage header, PRAGMA quick_check failed) and
DatabaseUnwritable (read-only file or directory, no space), each one line: file, problem, fix.
`Database.limit_pages(n)` caps the file's growth (SQLite's max_page_count): a real "disk full" for tests.

Layering: storage imports only `config`, `state` and libraries, never a package above it.
"""
