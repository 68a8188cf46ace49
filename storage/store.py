"""The dataset store: the samples table, the source of truth for samples (reads of records in
`storage.store_reads`, of the whole JSON array in `storage.store_json`, column-wise reads and
damaged rows in `storage.store_columns`, the columns themselves in `storage.fields`).

Every write is one transaction, so an insert costs the same at 100,000 rows as at 1,000 and
concurrent writers lose nothing (`storage.database`). Listeners hear about every committed change,
which keeps the in-memory statistics frame (`dataset/stats.py`) current without re-reading the table.
"""
from __future__ import annotations

import json
import logging
import threading
import uuid
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence


from state import utc_now  # noqa: F401  (re-exported: one clock format for rows and batches)
from storage import json_blocks
from storage.database import Database
from storage.dialect import sqlite_dialect
from storage.errors import (DuplicateId, DuplicateQuestion, InvalidRecord, StoreError,  # noqa: F401  (re-exported)
                            WriteFailed)
from storage.fields import (COLUMNS, CONTENT_FIELDS, EDITABLE_FIELDS, FILTER_COLUMNS,  # noqa: F401  (re-exported)
                            METADATA_FIELDS, REQUIRED_IMPORT_FIELDS, ROW, WRITTEN, encode_record)
from storage.question_key import question_key
from storage.records import STORAGE_KEYS, check_record
from storage.repairs import NUMBER_COLUMNS, repair_record
from storage.schema import damaged_checks
from storage.store_changes import Change, ChangeEvents  # noqa: F401  (Change re-exported)
from storage.store_columns import ColumnReads, DamagedRows
from storage.store_json import JsonArrays
from storage.store_reads import SEARCH_FIELDS, RecordReads  # noqa: F401  (SEARCH_FIELDS re-exported)

_STORED_APART = frozenset((*COLUMNS, "seq"))   # keys a record's `extra` never holds (a set: tested for every key)
TAIL_KEPT = 2 * json_blocks.BLOCK_ROWS   # the JSON of at most this many unsealed rows written is kept for sealing
log = logging.getLogger("storage")


def new_sample_id(prefix: str | None) -> str:
    return f"{prefix or 'manual'}_{uuid.uuid4()}"


class Store(RecordReads, ChangeEvents, JsonArrays, ColumnReads, DamagedRows):
    """The samples of one dataset database (its schema brought up to date on opening): a SQLite
    file (`Store(path)`) or an opened database of either backend (`Store(database)`, see
    `storage.open_storage`). The SQL below is shared; `database.dialect` holds what differs."""

    def __init__(self, source: Path | str | Any):
        if isinstance(source, (str, Path)):
            source = Database(source)
            source.dialect = sqlite_dialect(_DAMAGED)
        self.database = source           # for storage modules only (BatchRepository shares it)
        self.dialect = source.dialect
        self.path = self.database.path   # the file, or the database URL without its password
        self._lock = threading.Lock()
        self._listeners: list[Callable[[Change], None]] = []
        self.version = 0                  # bumped on every committed change (a cache key)
        self._damaged: dict[str, list[str]] | None = None   # damaged_rows(): None until scanned
        self._touched: set[str] | None = None               # ids changed while it scans
        self._scan_lock = threading.Lock()
        self._feed = None   # PostgreSQL: other servers' changes, delivered as change events
        self._tail: dict[int, tuple[str, bytes]] = {}   # SQLite: seq -> (updated_at, JSON) of rows written, not sealed
        # PostgreSQL: id -> [kind ("add"/"update"/"delete"), fence] of a write that may have been made
        self._in_doubt: dict[str, list[Any]] = {}
        if self.dialect.name == "postgresql":
            from storage.postgres.changes import ChangeFeed

            self._feed = ChangeFeed(source, source.origin, self._remote_changes, refresh=self._refresh_snapshot,
                                    after_poll=self._settle_doubts)
            self._feed.start()

    def close(self) -> None:
        """Close this thread's connection (and finished threads'); see `Database.close`. (PostgreSQL:
        stop following other servers' changes and close the pool.)"""
        if self._feed is not None:
            self._feed.stop()
        self.database.close()

    def writable(self) -> bool:
        """Whether a small write works now (see `write_problem`)."""
        return self.database.writable()

    def write_problem(self) -> str | None:
        """Try a small real write in a short transaction (waiting at most a second for the write
        lock): None if it worked, else what is wrong, naming the file and what to do."""
        return self.database.write_problem()

    def size_bytes(self) -> int:
        return self.database.size_bytes()

    def check_reachable(self) -> None:
        """PostgreSQL: raise `DatabaseUnreachable` while the database server is known to be away
        (no query is made otherwise), before answering from memory what the database would say.
        SQLite: nothing (a local file)."""
        check = getattr(self.database, "check_reachable", None)
        if check is not None:
            check()

    def describe(self) -> dict[str, Any]:
        """The backend and where its data lives (never a password), for /api/health."""
        return self.database.describe()

    # -- conversion ------------------------------------------------------------------------

    @staticmethod
    def _to_row(record: Mapping[str, Any]) -> dict[str, Any]:
        """The columns of a record `check_record` has passed."""
        row = {name: record.get(name) for name in COLUMNS if name != "extra"}
        row["simulated"] = 1 if record.get("simulated") else 0
        flags = record.get("quality_flags")
        row["quality_flags"] = json.dumps(list(flags)) if flags is not None else None
        extra = {k: v for k, v in record.items() if k not in _STORED_APART}
        row["extra"] = json.dumps(extra, ensure_ascii=False) if extra else None
        row["question_key"] = question_key(row["question"])
        return row

    @staticmethod
    def to_record(row: Mapping[str, Any]) -> dict[str, Any]:
        """A stored row as a record; a field an older version stored with the wrong type comes
        back repaired (`storage.repairs.repair_record`), so one bad row never breaks a read."""
        return repair_record(row)[0]

    # -- writes ----------------------------------------------------------------------------

    def add(self, record: Mapping[str, Any]) -> dict[str, Any]:
        return self.add_many([record])[0]

    def add_many(self, records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Insert records in one transaction; all or nothing. Each is checked first
        (`InvalidRecord` naming the record and field; nothing written). Missing timestamps are filled in."""
        now = utc_now()
        rows, checked_records = [], []
        for number, record in enumerate(records):
            try:
                checked = check_record(record)
            except InvalidRecord as exc:
                if len(records) > 1:
                    where = f"record {number + 1}" + (f" ({record.get('id')!r})" if isinstance(record, Mapping) else "")
                    raise InvalidRecord([(f"{where}: {field}", message) for field, message in exc.problems]) from None
                raise
            row = self._to_row(checked)
            row["created_at"] = row["created_at"] or now
            row["updated_at"] = row["updated_at"] or row["created_at"]
            rows.append(row)
            checked_records.append(checked)
        sql = f"INSERT INTO samples ({', '.join(WRITTEN)}) VALUES ({', '.join(':' + n for n in WRITTEN)})"
        stored = [_as_read(row, checked) for row, checked in zip(rows, checked_records)]
        by_id = {record["id"]: record for record in stored}
        try:
            with self.database.transaction() as db:
                if self.dialect.json_blocks:   # SQLite: the rows' JSON is kept in compressed blocks
                    last = db.execute("SELECT coalesce(max(seq), 0) FROM samples").fetchone()[0]
                    db.executemany(sql, rows)
                    written = {seq: (by_id[sample_id]["updated_at"], encode_record(by_id[sample_id])) for seq, sample_id
                               in db.execute("SELECT seq, id FROM samples WHERE seq > ?", (last,))}
                    sealed_through = None
                    if json_blocks.unsealed_tail(db) >= json_blocks.BLOCK_ROWS:
                        # seal in the same transaction, with the JSON of the new rows at hand (nothing can
                        # change them in between) and of the unsealed rows written before, where unchanged:
                        # none need be read back and decoded
                        with self._lock:
                            kept = {**self._tail, **written}
                        json_blocks.seal(db, lambda *where: self._encoded_range(*where, fresh=kept))
                        sealed_through = json_blocks.sealed_through(db)
                else:   # PostgreSQL: each row's JSON beside it, keyed by the seq the insert gave the row
                    db.executemany(sql, rows)   # psycopg pipelines the statements: one round trip
                    seqs = db.execute("SELECT seq, id FROM samples WHERE id = ANY(?)", (list(by_id),)).fetchall()
                    db.executemany("INSERT INTO samples_json (seq, body) VALUES (?, ?)",
                                   [(seq, encode_record(by_id[sample_id])) for seq, sample_id in seqs])
        except self.database.IntegrityError as exc:
            ids = [row["id"] for row in rows]
            if _conflict_column(exc) == "question_key" and len(set(ids)) == len(ids) and not self.exists(ids):
                raise self._duplicate_questions(rows) from None
            raise DuplicateId(str(exc)) from None
        except WriteFailed:
            self._doubt(list(by_id), "add")
            raise
        if self.dialect.json_blocks:
            self._keep_tail(written, sealed_through)
        self._notify(Change("add", tuple(stored)))
        return stored

    def _keep_tail(self, written: Mapping[int, tuple[str, bytes]], sealed_through: int | None) -> None:
        """After a committed insert: keep the JSON of the rows written that no block holds yet (at
        most `TAIL_KEPT`, the newest), for the write that seals them."""
        with self._lock:
            tail = self._tail
            tail.update(written)
            if sealed_through is not None:
                for seq in [seq for seq in tail if seq <= sealed_through]:
                    del tail[seq]
            if len(tail) > TAIL_KEPT:
                for seq in sorted(tail)[:len(tail) - TAIL_KEPT]:
                    del tail[seq]

    def update(self, sample_id: str, changes: Mapping[str, Any]) -> dict[str, Any] | None:
        """Merge `changes` into a row, keep its other fields, refresh `updated_at`; None if absent.
        The changed fields are checked (`InvalidRecord`; nothing written); a field an older version
        stored with the wrong type is written back repaired, one it stored too long is kept."""
        if self.unmatchable(sample_id):
            return None
        try:
            with self.database.transaction() as db:
                row = db.execute(f"SELECT seq, {ROW}, question_key FROM samples WHERE id = ?{self.dialect.for_update}",
                                 (sample_id,)).fetchone()
                if row is None:
                    return None
                current = {name: row[name] for name in COLUMNS}
                merged = {**self.to_record(current), **changes, "id": sample_id, "updated_at": utc_now()}
                stored = self._to_row(check_record(merged, only=[*changes, "updated_at"]))
                if "question" not in changes:   # the key stays (a duplicate an older version let in has none)
                    stored["question_key"] = row["question_key"]
                assignments = ", ".join(f"{n} = :{n}" for n in WRITTEN if n != "id")
                db.execute(f"UPDATE samples SET {assignments} WHERE id = :id", stored)
                del stored["question_key"]
                record = self.to_record(stored)
                if not self.dialect.json_blocks:   # (SQLite's triggers drop the row's block instead)
                    db.execute("INSERT INTO samples_json (seq, body) VALUES (?, ?) ON CONFLICT (seq) "
                               "DO UPDATE SET body = excluded.body", (row["seq"], encode_record(record)))
        except self.database.IntegrityError as exc:
            if _conflict_column(exc) != "question_key":
                raise
            raise DuplicateQuestion([(sample_id, self._holder(stored["question_key"], sample_id))]) from None
        except WriteFailed:
            self._doubt([sample_id], "update")
            raise
        with self._lock:
            self._tail.pop(row["seq"], None)   # (its new `updated_at` would refuse the JSON kept anyway)
        self._notify(Change("update", (record,)))
        return record

    def delete(self, sample_id: str) -> bool:
        if self.unmatchable(sample_id):
            return False
        try:
            with self.database.transaction() as db:
                deleted = db.execute("DELETE FROM samples WHERE id = ?", (sample_id,)).rowcount
        except WriteFailed:
            self._doubt([sample_id], "delete")
            raise
        if deleted:
            self._notify(Change("delete", ids=(sample_id,)))
        return bool(deleted)

    def _duplicate_questions(self, rows: Sequence[Mapping[str, Any]]) -> DuplicateQuestion:
        """Which of `rows` (refused by the unique question key) repeat a stored question or an
        earlier row's, and whose."""
        first: dict[bytes, str] = {}
        conflicts: list[tuple[str, str | None]] = []
        keys = [row["question_key"] for row in rows if row["question_key"] is not None]
        stored: dict[bytes, str] = {}
        with self.database.reading() as db:
            for start in range(0, len(keys), 500):
                chunk = keys[start:start + 500]
                marks = ", ".join("?" for _ in chunk)
                stored.update((bytes(k), i) for i, k in db.execute(
                    f"SELECT id, question_key FROM samples WHERE question_key IN ({marks})", chunk))
        for row in rows:
            key = row["question_key"]
            if key is None:
                continue
            holder = stored.get(key) or first.get(key)
            if holder is not None:
                conflicts.append((row["id"], holder))
            else:
                first[key] = row["id"]
        return DuplicateQuestion(conflicts)

    def _holder(self, key: bytes | None, other_than: str) -> str | None:
        """The id of the stored sample whose question has this key (not `other_than`)."""
        with self.database.reading() as db:
            row = db.execute("SELECT id FROM samples WHERE question_key = ? AND id != ?", (key, other_than)).fetchone()
        return row[0] if row else None


def _as_read(row: Mapping[str, Any], checked: Mapping[str, Any]) -> dict[str, Any]:
    """The record a read of this freshly written row returns (`to_record`), without decoding the
    JSON just encoded: the columns, then the checked record's extra fields."""
    record = {name: row[name] for name in COLUMNS if name != "extra"}
    record["simulated"] = bool(row["simulated"])
    record["quality_flags"] = list(checked.get("quality_flags") or [])
    for name in NUMBER_COLUMNS:
        if type(record[name]) is int:
            record[name] = float(record[name])
    for key, value in checked.items():
        if key not in record and key not in STORAGE_KEYS:
            record[key] = value
    return record


def _damaged_condition(names: Sequence[str] = COLUMNS) -> str:
    return " OR ".join(f"({check})" for name, check in damaged_checks().items() if name in names) or "0"


_DAMAGED = _damaged_condition()


def _conflict_column(exc: BaseException) -> str:
    """Which unique column an insert or update broke: "question_key" or "id"."""
    constraint = getattr(getattr(exc, "diag", None), "constraint_name", None) or str(exc)
    return "question_key" if "question_key" in constraint else "id"
