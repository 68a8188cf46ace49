"""The statistics frame's snapshot (PostgreSQL migration 7): the light columns of every sample as
`Store.column_csv` reads them, kept zstd-compressed with the change-log position they reflect, so
that a starting server reads a few megabytes and the rows changed since instead of every row.

Why it is exact. A snapshot is read in one REPEATABLE READ transaction, and its `horizon` is that
transaction snapshot's xmin: every transaction below it had ended, so a row that no transaction at
or above the horizon has changed is in the snapshot as it is now; and every transaction at or above
it logs each sample it writes in `sample_changes` (migration 2's trigger) under its own xid, which
is at or above the horizon. A load (one REPEATABLE READ transaction too) takes the saved rows,
drops every id logged at or above the horizon and reads those ids' rows as they are: exactly what
reading every row in the load's own snapshot would give.

What keeps it true: the change feed's prune keeps the log rows at or above the horizon (`PRUNE`);
a trigger on the log records the highest xid deleted from it by anything (`change_log_pruned`: a
server of an older version pruning, a hand), and a TRUNCATE of samples or of the log moves that
mark past every earlier snapshot; a snapshot whose horizon is not above the mark is not used. The
saved `columns` must be what is asked for. A migration that changes what a light column holds
must `DELETE FROM stats_snapshot`.

Refresh: a load with no usable snapshot saves the rows it read as the new one (in a thread, once
they are handed back: the first statistics do not wait for it); and when the log
kept for a snapshot passes `REFRESH_CHANGES` rows, the change feed's prune step (`due`) asks for
a fresh one, so a load replays at most about that many rows and the log stays bounded.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable

try:
    from compression import zstd   # Python 3.14+
except ImportError:  # pragma: no cover - older Pythons
    from backports import zstd

log = logging.getLogger("storage")

REFRESH_CHANGES = 10_000   # log rows kept for a snapshot before a fresh one is saved
ZSTD_LEVEL = 3             # 13.6 MB of CSV at 100k rows in about 40 ms
SAVE_LOCK = 7_104_202_612  # pg_try_advisory_xact_lock key: one server saving at a time
_saving: list[threading.Thread] = []   # snapshots being saved after a start's first read
_saving_lock = threading.Lock()

STATEMENTS = (
    """CREATE TABLE stats_snapshot (
        id SMALLINT PRIMARY KEY CHECK (id = 1),
        columns TEXT NOT NULL,
        horizon xid8 NOT NULL,
        body BYTEA NOT NULL,
        made_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )""",
    "CREATE TABLE change_log_pruned (id SMALLINT PRIMARY KEY CHECK (id = 1), max_xid xid8 NOT NULL)",
    "INSERT INTO change_log_pruned (id, max_xid) VALUES (1, '0')",
    """CREATE FUNCTION note_change_log_pruned() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE change_log_pruned SET max_xid = greatest(max_xid, (SELECT xid FROM gone ORDER BY xid DESC LIMIT 1))
            WHERE EXISTS (SELECT 1 FROM gone);
        RETURN NULL;
    END $$""",
    """CREATE FUNCTION note_samples_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE change_log_pruned SET max_xid = greatest(max_xid, pg_current_xact_id());
        RETURN NULL;
    END $$""",
    "CREATE TRIGGER sample_changes_pruned AFTER DELETE ON sample_changes REFERENCING OLD TABLE AS gone "
    "FOR EACH STATEMENT EXECUTE FUNCTION note_change_log_pruned()",
    "CREATE TRIGGER sample_changes_truncated AFTER TRUNCATE ON sample_changes "
    "FOR EACH STATEMENT EXECUTE FUNCTION note_samples_truncated()",
    "CREATE TRIGGER samples_truncated AFTER TRUNCATE ON samples FOR EACH STATEMENT EXECUTE FUNCTION note_samples_truncated()",
)

# The change feed's prune (`minutes`: its retention): the old log rows no snapshot needs.
PRUNE = ("DELETE FROM sample_changes WHERE at < now() - interval '{minutes} minutes' "
         "AND NOT EXISTS (SELECT 1 FROM stats_snapshot s WHERE sample_changes.xid >= s.horizon)")
_USABLE = ("SELECT s.columns, s.horizon::text, s.body FROM stats_snapshot s JOIN change_log_pruned p ON p.id = 1 "
           "WHERE s.id = 1 AND s.horizon > p.max_xid")


@dataclass(frozen=True)
class ColumnCsv:
    """`Store.column_csv`'s answer: the rows are the lines of `saved` (a snapshot) whose id is not
    in `replaced`, and the lines of `fresh` (read now); each line starts with `seq`, their order."""
    saved: bytes
    replaced: tuple[str, ...]
    fresh: bytes


def install(session: Any) -> None:
    for statement in STATEMENTS:
        session.execute(statement)


def read(database: Any, columns: str, copy_sql: Callable[[str], str], *, afresh: bool = False) -> ColumnCsv:
    """Every sample's light columns (`copy_sql(where)`: the COPY of the rows matching `where`),
    from the snapshot saved for these `columns` and the rows changed since, or, with none usable
    (or `afresh`), from every row, then saved as the new snapshot."""
    with database.reading() as db, db.connection.transaction():
        db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        horizon = int(db.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text").fetchone()[0])
        with db.connection.cursor(binary=True) as cursor:   # the body as bytes, not as hex text
            saved = None if afresh else cursor.execute(_USABLE).fetchone()
        if saved is not None and saved[0] == columns:
            since = int(saved[1])   # digits, read back from an xid8: formatted into the COPY as such
            replaced = tuple(row[0] for row in db.execute(
                "SELECT DISTINCT id FROM sample_changes WHERE xid >= CAST(CAST(? AS text) AS xid8)", (since,)))
            fresh = db.copy_out(copy_sql(f"id IN (SELECT id FROM sample_changes WHERE xid >= '{since}'::xid8)"))
            return ColumnCsv(zstd.decompress(saved[2]), replaced, fresh)
        fresh = db.copy_out(copy_sql("TRUE"))
    if afresh:
        save(database, columns, horizon, fresh)
    else:   # a start waiting for its statistics: saved after they are answered (compressing and writing take ~0.1 s)
        in_background(save, database, columns, horizon, fresh)
    return ColumnCsv(b"", (), fresh)


def in_background(work: Callable[..., Any], *args: Any) -> threading.Thread:
    """Run `work(*args)` in a daemon thread that `wait_for_saves` waits for."""
    saving = threading.Thread(target=work, args=args, name="stats-snapshot-save", daemon=True)
    saving.start()
    with _saving_lock:   # (the ended ones are let go: only a test's `wait_for_saves` would clear them)
        _saving[:] = [thread for thread in _saving if thread.is_alive()] + [saving]
    return saving


def wait_for_saves(timeout: float = 30.0) -> None:
    """Wait until the snapshots being saved in the background are saved (or given up)."""
    with _saving_lock:
        pending, _saving[:] = list(_saving), []
    for saving in pending:
        saving.join(timeout)


def save(database: Any, columns: str, horizon: int, csv: bytes) -> None:
    """Keep `csv` (every row, read at a snapshot whose xmin is `horizon`) unless one of the same
    columns with a later horizon is saved, or another server is saving one; a failure is logged,
    never raised (the statistics do not depend on it). An equal horizon replaces: the later read
    holds fewer changed rows (a long transaction anywhere on the server holds every xmin back)."""
    try:
        body = zstd.compress(csv, level=ZSTD_LEVEL)
        with database.transaction() as db:
            if not db.execute("SELECT pg_try_advisory_xact_lock(?)", (SAVE_LOCK,)).fetchone()[0]:
                return
            db.execute("INSERT INTO stats_snapshot (id, columns, horizon, body) VALUES (1, ?, CAST(CAST(? AS text) AS xid8), ?) "
                       "ON CONFLICT (id) DO UPDATE SET columns = excluded.columns, horizon = excluded.horizon, "
                       "body = excluded.body, made_at = now() "
                       "WHERE stats_snapshot.horizon <= excluded.horizon OR stats_snapshot.columns <> excluded.columns",
                       (columns, horizon, body))
    except Exception as exc:  # noqa: BLE001 - the next load reads every row again and retries
        log.warning("could not save the statistics snapshot (%s); the next start reads every row", exc)


def due(session: Any) -> str | None:
    """The columns of a snapshot whose kept log has passed `REFRESH_CHANGES` rows (to be saved
    afresh), else None."""
    row = session.execute(
        "SELECT s.columns FROM stats_snapshot s WHERE (SELECT count(*) FROM (SELECT 1 FROM sample_changes c "
        f"WHERE c.xid >= s.horizon LIMIT {REFRESH_CHANGES + 1}) kept) > {REFRESH_CHANGES}").fetchone()
    return row[0] if row else None
