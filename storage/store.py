"""The dataset store: SQLite in WAL mode, the source of truth for samples.

Every write is one transaction (`BEGIN IMMEDIATE`, so concurrent writers queue instead of losing
each other's updates); an insert costs the same at 100,000 rows as at 1,000. Each thread gets
its own connection. Listeners hear about every committed change, which keeps the in-memory
statistics frame (`stats.py`) current without re-reading the table.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

CONTENT_FIELDS = ("question", "answer", "reasoning", "case_citation")
EDITABLE_FIELDS = CONTENT_FIELDS + ("topic", "difficulty", "sample_type")
REQUIRED_IMPORT_FIELDS = ("id", "question", "answer", "topic", "difficulty", "case_citation", "reasoning")
METADATA_FIELDS = ("provider", "model", "batch_id", "created_at", "updated_at", "prompt_tokens",
                   "completion_tokens", "latency", "attempts", "simulated", "quality_score", "quality_flags",
                   "duplicate_of")
COLUMNS = ("id",) + EDITABLE_FIELDS + METADATA_FIELDS + ("extra",)
FILTER_COLUMNS = ("topic", "difficulty", "sample_type", "provider", "model", "batch_id")
SEARCH_FIELDS = ("question", "answer", "reasoning", "case_citation", "topic")

ADDED_COLUMNS = {"duplicate_of": "TEXT"}
SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
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
);
CREATE INDEX IF NOT EXISTS samples_batch ON samples(batch_id);
CREATE INDEX IF NOT EXISTS samples_topic ON samples(topic);
CREATE INDEX IF NOT EXISTS samples_difficulty ON samples(difficulty);
"""


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat()


def new_sample_id(prefix: str | None) -> str:
    return f"{prefix or 'manual'}_{uuid.uuid4()}"


@dataclass(frozen=True)
class Change:
    kind: str                                # "add", "update", "delete"
    records: tuple[dict[str, Any], ...] = ()  # the rows as stored (add, update)
    ids: tuple[str, ...] = ()                # delete


class StoreError(Exception):
    pass


class DuplicateId(StoreError):
    pass


class Store:
    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._connections: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._lock = threading.Lock()
        self._listeners: list[Callable[[Change], None]] = []
        self.version = 0
        db = self._connection()
        db.executescript(SCHEMA)
        present = {row[1] for row in db.execute("PRAGMA table_info(samples)")}
        for column, kind in ADDED_COLUMNS.items():   # databases made by earlier versions
            if column not in present:
                db.execute(f"ALTER TABLE samples ADD COLUMN {column} {kind}")

    # -- connections -----------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")   # durable across a process crash in WAL mode
            db.execute("PRAGMA foreign_keys=ON")
            self._local.db = db
            with self._lock:
                self._connections.append((threading.current_thread(), db))
        return db

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: taken at once (BEGIN IMMEDIATE), committed or rolled back whole."""
        db = self._connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def read(self) -> sqlite3.Connection:
        return self._connection()

    def close(self) -> None:
        """Close this thread's connection and those of finished threads. A connection another
        thread may still be using is left to that thread (closing it under a running query would
        crash the interpreter); it closes when the thread ends."""
        current = threading.current_thread()
        with self._lock:
            keep = []
            for thread, db in self._connections:
                if thread is current or not thread.is_alive():
                    try:
                        db.close()
                    except sqlite3.Error:
                        pass
                else:
                    keep.append((thread, db))
            self._connections = keep
        self._local = threading.local()

    def on_change(self, listener: Callable[[Change], None]) -> None:
        self._listeners.append(listener)

    def _notify(self, change: Change) -> None:
        with self._lock:
            self.version += 1
        for listener in list(self._listeners):
            listener(change)

    def writable(self) -> bool:
        """Whether a write could start now (takes the write lock and releases it; changes nothing)."""
        db = self._connection()
        try:
            db.execute("BEGIN IMMEDIATE")
            db.execute("ROLLBACK")
            return True
        except sqlite3.Error:
            return False

    # -- conversion ------------------------------------------------------------------------

    @staticmethod
    def _to_row(record: Mapping[str, Any]) -> dict[str, Any]:
        row = {name: record.get(name) for name in COLUMNS if name != "extra"}
        row["simulated"] = 1 if record.get("simulated") else 0
        flags = record.get("quality_flags")
        row["quality_flags"] = json.dumps(list(flags)) if flags is not None else None
        extra = {k: v for k, v in record.items() if k not in COLUMNS and k != "seq"}
        row["extra"] = json.dumps(extra, ensure_ascii=False, default=str) if extra else None
        return row

    @staticmethod
    def to_record(row: sqlite3.Row | Mapping[str, Any]) -> dict[str, Any]:
        data = dict(row)
        data.pop("seq", None)
        extra = data.pop("extra", None)
        data["simulated"] = bool(data.get("simulated"))
        flags = data.get("quality_flags")
        data["quality_flags"] = json.loads(flags) if flags else []
        if extra:
            for key, value in json.loads(extra).items():
                data.setdefault(key, value)
        return data

    # -- writes ----------------------------------------------------------------------------

    def add(self, record: Mapping[str, Any]) -> dict[str, Any]:
        return self.add_many([record])[0]

    def add_many(self, records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Insert records in one transaction; all or nothing. Missing timestamps are filled in."""
        now = utc_now()
        rows = []
        for record in records:
            row = self._to_row(record)
            row["created_at"] = row["created_at"] or now
            row["updated_at"] = row["updated_at"] or row["created_at"]
            rows.append(row)
        sql = f"INSERT INTO samples ({', '.join(COLUMNS)}) VALUES ({', '.join(':' + n for n in COLUMNS)})"
        try:
            with self.transaction() as db:
                db.executemany(sql, rows)
        except sqlite3.IntegrityError as exc:
            raise DuplicateId(str(exc)) from None
        stored = [self.to_record(row) for row in rows]
        self._notify(Change("add", tuple(stored)))
        return stored

    def update(self, sample_id: str, changes: Mapping[str, Any]) -> dict[str, Any] | None:
        """Merge `changes` into a row, keep its other fields, refresh `updated_at`; None if absent."""
        with self.transaction() as db:
            row = db.execute("SELECT * FROM samples WHERE id = ?", (sample_id,)).fetchone()
            if row is None:
                return None
            merged = {**self.to_record(row), **changes, "id": sample_id, "updated_at": utc_now()}
            stored = self._to_row(merged)
            assignments = ", ".join(f"{n} = :{n}" for n in COLUMNS if n != "id")
            db.execute(f"UPDATE samples SET {assignments} WHERE id = :id", stored)
        record = self.to_record(stored)
        self._notify(Change("update", (record,)))
        return record

    def delete(self, sample_id: str) -> bool:
        with self.transaction() as db:
            deleted = db.execute("DELETE FROM samples WHERE id = ?", (sample_id,)).rowcount
        if deleted:
            self._notify(Change("delete", ids=(sample_id,)))
        return bool(deleted)

    # -- reads -----------------------------------------------------------------------------

    @staticmethod
    def _where(filters: Mapping[str, Any] | None) -> tuple[str, list[Any]]:
        clauses, params = [], []
        for name, value in (filters or {}).items():
            if value is None or value == "":
                continue
            if name in FILTER_COLUMNS:
                clauses.append(f"{name} = ?")
                params.append(value)
            elif name == "practice_area":
                clauses.append("(topic = ? OR topic LIKE ? ESCAPE '\\')")
                params += [value, _like_escape(value) + " - %"]
            elif name == "simulated":
                clauses.append("simulated = ?")
                params.append(1 if value else 0)
            elif name == "flag":
                clauses.append("EXISTS (SELECT 1 FROM json_each(samples.quality_flags) WHERE value = ?)")
                params.append(value)
            elif name == "exclude_flags":
                codes = list(value)
                marks = ", ".join("?" for _ in codes) or "NULL"
                clauses.append(f"NOT EXISTS (SELECT 1 FROM json_each(samples.quality_flags) WHERE value IN ({marks}))")
                params += codes
            elif name == "min_score":
                clauses.append("quality_score >= ?")
                params.append(float(value))
            elif name == "ids":
                ids = list(value)
                clauses.append(f"id IN ({', '.join('?' for _ in ids) or 'NULL'})")
                params += ids
            else:
                raise ValueError(f"unknown filter {name!r}")
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def count(self, filters: Mapping[str, Any] | None = None) -> int:
        where, params = self._where(filters)
        return self.read().execute(f"SELECT COUNT(*) FROM samples{where}", params).fetchone()[0]

    def get(self, sample_id: str) -> dict[str, Any] | None:
        row = self.read().execute("SELECT * FROM samples WHERE id = ?", (sample_id,)).fetchone()
        return self.to_record(row) if row else None

    def exists(self, ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        db = self.read()
        for start in range(0, len(ids), 500):
            chunk = list(ids[start:start + 500])
            marks = ", ".join("?" for _ in chunk)
            found.update(r[0] for r in db.execute(f"SELECT id FROM samples WHERE id IN ({marks})", chunk))
        return found

    def list(self, filters: Mapping[str, Any] | None = None, limit: int | None = None, offset: int = 0,
             newest_first: bool = False) -> list[dict[str, Any]]:
        return list(self.iter_records(filters, limit=limit, offset=offset, newest_first=newest_first))

    def iter_records(self, filters: Mapping[str, Any] | None = None, *, limit: int | None = None, offset: int = 0,
                     newest_first: bool = False, chunk: int = 1000) -> Iterator[dict[str, Any]]:
        """Records in insertion order (or newest first), fetched in chunks."""
        where, params = self._where(filters)
        order = "DESC" if newest_first else "ASC"
        sql = f"SELECT * FROM samples{where} ORDER BY seq {order} LIMIT ? OFFSET ?"
        cursor = self.read().execute(sql, [*params, -1 if limit is None else limit, offset])
        while True:
            rows = cursor.fetchmany(chunk)
            if not rows:
                return
            for row in rows:
                yield self.to_record(row)

    def random(self, count: int, filters: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        where, params = self._where(filters)
        rows = self.read().execute(f"SELECT * FROM samples{where} ORDER BY random() LIMIT ?", [*params, count])
        return [self.to_record(r) for r in rows]

    def search(self, text: str, field: str | None, limit: int) -> list[dict[str, Any]]:
        """Plain-text, case-insensitive substring search (never a regex)."""
        fields = [field] if field else list(SEARCH_FIELDS)
        pattern = f"%{_like_escape(text)}%"
        where = " OR ".join(f"{f} LIKE ? ESCAPE '\\'" for f in fields)
        rows = self.read().execute(f"SELECT * FROM samples WHERE {where} ORDER BY seq LIMIT ?",
                                   [*([pattern] * len(fields)), limit])
        return [self.to_record(r) for r in rows]

    def size_bytes(self) -> int:
        total = 0
        for suffix in ("", "-wal"):
            candidate = Path(str(self.path) + suffix)
            if candidate.exists():
                total += candidate.stat().st_size
        return total


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
