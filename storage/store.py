"""The dataset store: the samples table, the source of truth for samples.

Every write is one transaction, so an insert costs the same at 100,000 rows as at 1,000 and
concurrent writers lose nothing (`storage.database`). Listeners hear about every committed change,
which keeps the in-memory statistics frame (`dataset/stats.py`) current without re-reading the table.
"""
from __future__ import annotations

import itertools
import json
import logging
import re
import sqlite3
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import orjson

from state import utc_now  # noqa: F401  (re-exported: one clock format for rows and batches)
from storage import json_blocks
from storage.database import Database
from storage.errors import DuplicateId, InvalidRecord, StoreError, WriteFailed  # noqa: F401  (re-exported)
from storage.records import (COUNT_COLUMNS, MAX_COUNT, NUMBER_COLUMNS, OPTIONAL_TEXT_COLUMNS, STORAGE_KEYS,
                             TEXT_COLUMNS, check_record, repair_column, repair_record)
from storage.schema import LIGHT_COLUMNS, SEARCH_COLUMNS, TEXT_LENGTHS, damaged_checks, light_length

CONTENT_FIELDS = ("question", "answer", "reasoning", "case_citation")
EDITABLE_FIELDS = CONTENT_FIELDS + ("topic", "difficulty", "sample_type")
REQUIRED_IMPORT_FIELDS = ("id", "question", "answer", "topic", "difficulty", "case_citation", "reasoning")
METADATA_FIELDS = ("provider", "model", "batch_id", "created_at", "updated_at", "prompt_tokens",
                   "completion_tokens", "latency", "attempts", "simulated", "quality_score", "quality_flags",
                   "duplicate_of")
COLUMNS = ("id",) + EDITABLE_FIELDS + METADATA_FIELDS + ("extra",)
FILTER_COLUMNS = ("topic", "difficulty", "sample_type", "provider", "model", "batch_id")
SEARCH_FIELDS = SEARCH_COLUMNS
_WORD = re.compile(r"[^\W_]+")   # what the index's unicode61 tokenizer calls a word
ROW = ", ".join(COLUMNS)   # every stored field, named (not `*`: column order differs in adopted files)
log = logging.getLogger("storage")



def encode_record(record: Mapping[str, Any]) -> bytes:
    """A record as JSON (orjson: UTF-8, compact), as `iter_json` and `/api/data` send it."""
    try:
        return orjson.dumps(record, default=str)
    except orjson.JSONEncodeError:   # what orjson refuses (a lone surrogate, a huge integer), json escapes
        return json.dumps(record, default=str).encode()


def new_sample_id(prefix: str | None) -> str:
    return f"{prefix or 'manual'}_{uuid.uuid4()}"


@dataclass(frozen=True)
class Change:
    kind: str                                # "add", "update", "delete"
    records: tuple[dict[str, Any], ...] = ()  # the rows as stored (add, update)
    ids: tuple[str, ...] = ()                # delete


class Store:
    """The samples of one dataset database (its schema brought up to date on opening)."""

    def __init__(self, path: Path | str):
        self.database = Database(path)   # for storage modules only (BatchRepository shares it)
        self.path = self.database.path
        self._lock = threading.Lock()
        self._listeners: list[Callable[[Change], None]] = []
        self.version = 0                  # bumped on every committed change (a cache key)
        self._damaged: dict[str, list[str]] | None = None   # damaged_rows(): None until scanned
        self._touched: set[str] | None = None               # ids changed while it scans
        self._scan_lock = threading.Lock()

    def close(self) -> None:
        """Close this thread's connection (and finished threads'); see `Database.close`."""
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

    def _read(self) -> sqlite3.Connection:
        return self.database.connection()

    def on_change(self, listener: Callable[[Change], None]) -> None:
        self._listeners.append(listener)

    def _notify(self, change: Change) -> None:
        """Tell every listener about a committed change. The write has happened whatever a listener
        does: its exception is logged, never passed to the writer (who would take the write for failed)."""
        with self._lock:
            self.version += 1
            if self._damaged is not None or self._touched is not None:   # a rewritten row is a repaired one
                changed = [record["id"] for record in change.records] + list(change.ids)
                if self._touched is not None:
                    self._touched.update(changed)
                if self._damaged is not None:
                    for sample_id in changed:
                        self._damaged.pop(sample_id, None)
        for listener in list(self._listeners):
            try:
                listener(change)
            except Exception:
                log.exception("%s: a change listener failed on a committed %s; the write stands",
                              self.path, change.kind)

    # -- conversion ------------------------------------------------------------------------

    @staticmethod
    def _to_row(record: Mapping[str, Any]) -> dict[str, Any]:
        """The columns of a record `check_record` has passed."""
        row = {name: record.get(name) for name in COLUMNS if name != "extra"}
        row["simulated"] = 1 if record.get("simulated") else 0
        flags = record.get("quality_flags")
        row["quality_flags"] = json.dumps(list(flags)) if flags is not None else None
        extra = {k: v for k, v in record.items() if k not in COLUMNS and k != "seq"}
        row["extra"] = json.dumps(extra, ensure_ascii=False) if extra else None
        return row

    @staticmethod
    def to_record(row: sqlite3.Row | Mapping[str, Any]) -> dict[str, Any]:
        """A stored row as a record; a field an older version stored with the wrong type comes
        back repaired (`storage.records.repair_record`), so one bad row never breaks a read."""
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
        sql = f"INSERT INTO samples ({', '.join(COLUMNS)}) VALUES ({', '.join(':' + n for n in COLUMNS)})"
        stored = [_as_read(row, checked) for row, checked in zip(rows, checked_records)]
        try:
            with self.database.transaction() as db:
                last = db.execute("SELECT coalesce(max(seq), 0) FROM samples").fetchone()[0]
                db.executemany(sql, rows)
                if json_blocks.unsealed_tail(db) >= json_blocks.BLOCK_ROWS:
                    # seal in the same transaction, with the JSON of the new rows at hand: nothing can
                    # change them in between, and they need not be read back and decoded
                    by_id = {record["id"]: record for record in stored}
                    fresh = {seq: encode_record(by_id[sample_id]) for seq, sample_id in
                             db.execute("SELECT seq, id FROM samples WHERE seq > ?", (last,))}
                    json_blocks.seal(db, lambda *where: self._encoded_range(*where, fresh=fresh))
        except sqlite3.IntegrityError as exc:
            raise DuplicateId(str(exc)) from None
        self._notify(Change("add", tuple(stored)))
        return stored

    def update(self, sample_id: str, changes: Mapping[str, Any]) -> dict[str, Any] | None:
        """Merge `changes` into a row, keep its other fields, refresh `updated_at`; None if absent.
        The changed fields are checked (`InvalidRecord`; nothing written); a field an older version
        stored with the wrong type is written back repaired, one it stored too long is kept."""
        with self.database.transaction() as db:
            row = db.execute(f"SELECT {ROW} FROM samples WHERE id = ?", (sample_id,)).fetchone()
            if row is None:
                return None
            merged = {**self.to_record(row), **changes, "id": sample_id, "updated_at": utc_now()}
            stored = self._to_row(check_record(merged, only=[*changes, "updated_at"]))
            assignments = ", ".join(f"{n} = :{n}" for n in COLUMNS if n != "id")
            db.execute(f"UPDATE samples SET {assignments} WHERE id = :id", stored)
        record = self.to_record(stored)
        self._notify(Change("update", (record,)))
        return record

    def delete(self, sample_id: str) -> bool:
        with self.database.transaction() as db:
            deleted = db.execute("DELETE FROM samples WHERE id = ?", (sample_id,)).rowcount
        if deleted:
            self._notify(Change("delete", ids=(sample_id,)))
        return bool(deleted)

    # -- reads -----------------------------------------------------------------------------

    @staticmethod
    def _where(filters: Mapping[str, Any] | None, table: str = "samples") -> tuple[str, list[Any]]:
        """The WHERE clause for `filters` over `table` (`samples`, or `samples_light`, which has every
        filtered column)."""
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
                clauses.append(f"EXISTS (SELECT 1 FROM json_each({table}.quality_flags) WHERE value = ?)")
                params.append(value)
            elif name == "exclude_flags":
                codes = list(value)
                marks = ", ".join("?" for _ in codes) or "NULL"
                clauses.append(f"NOT EXISTS (SELECT 1 FROM json_each({table}.quality_flags) WHERE value IN ({marks}))")
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
        where, params = self._where(filters, "samples_light")
        return self._read().execute(f"SELECT COUNT(*) FROM samples_light{where}", params).fetchone()[0]

    def get(self, sample_id: str) -> dict[str, Any] | None:
        row = self._read().execute(f"SELECT {ROW} FROM samples WHERE id = ?", (sample_id,)).fetchone()
        return self.to_record(row) if row else None

    def exists(self, ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        db = self._read()
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
        """Records in insertion order (or newest first), fetched in chunks. Filters and the offset
        are applied to the light table, so skipped rows' texts are never read."""
        where, params = self._where(filters, "samples_light")
        order = "DESC" if newest_first else "ASC"
        sql = (f"SELECT {ROW} FROM samples WHERE seq IN (SELECT seq FROM samples_light{where} ORDER BY seq {order} "
               f"LIMIT ? OFFSET ?) ORDER BY seq {order}")
        cursor = self._read().execute(sql, [*params, -1 if limit is None else limit, offset])
        while True:
            rows = cursor.fetchmany(chunk)
            if not rows:
                return
            for row in rows:
                yield self.to_record(row)

    def iter_json(self, filters: Mapping[str, Any] | None = None, *, limit: int | None = None, offset: int = 0,
                  newest_first: bool = False) -> Iterator[bytes]:
        """What `iter_records` yields, each record encoded as JSON (`encode_record`), in chunks of
        bytes: the pieces of a JSON array's body, without brackets, to be joined with commas.
        The whole dataset in insertion order comes from the compressed blocks (decompressed, not
        re-encoded); anything else is encoded row by row."""
        if not any(v not in (None, "") for v in (filters or {}).values()) and limit is None and not offset \
                and not newest_first:
            yield from json_blocks.plain_pieces(self._read(), self._encoded_range)
            return
        records = self.iter_records(filters, limit=limit, offset=offset, newest_first=newest_first)
        while chunk := [encode_record(record) for record in itertools.islice(records, 500)]:
            yield b",".join(chunk)

    def _encoded_range(self, db: sqlite3.Connection, after: int, before: int | None, limit: int,
                       fresh: Mapping[int, bytes] | None = None) -> list[tuple[int, bytes]]:
        """(seq, JSON) of up to `limit` rows with after < seq < before, in order; rows in `fresh`
        (just written, in this transaction) are taken from it instead of being read back."""
        bound, params = ("", [after, limit]) if before is None else (" AND seq < ?", [after, before, limit])
        if not fresh:
            rows = db.execute(f"SELECT seq, {ROW} FROM samples WHERE seq > ?{bound} ORDER BY seq LIMIT ?", params)
            return [(row["seq"], encode_record(self.to_record(row))) for row in rows]
        seqs = [seq for (seq,) in db.execute(f"SELECT seq FROM samples_light WHERE seq > ?{bound} ORDER BY seq "
                                             "LIMIT ?", params)]
        older = [seq for seq in seqs if seq not in fresh]
        found = dict(fresh)
        for start in range(0, len(older), 500):
            chunk = older[start:start + 500]
            rows = db.execute(f"SELECT seq, {ROW} FROM samples WHERE seq IN ({', '.join('?' for _ in chunk)})", chunk)
            found.update((row["seq"], encode_record(self.to_record(row))) for row in rows)
        return [(seq, found[seq]) for seq in seqs]

    def iter_json_zstd(self) -> Iterator[bytes]:
        """Every record, as the JSON array `iter_json` gives, compressed with zstd: the blocks
        compressed when rows were written, the rest on the way (`storage.json_blocks`)."""
        return json_blocks.array_zstd(self._read(), self._encoded_range)

    def seal_json(self, force: bool = False) -> int:
        """Compress the rows no block holds into blocks (`storage.json_blocks.seal`), when enough
        follow the last block or `force`; returns how many rows were sealed. `add_many` seals as it
        writes; this is for rows stored before the blocks existed (the start-up warm-up)."""
        if not force and json_blocks.unsealed_tail(self._read()) < json_blocks.BLOCK_ROWS:
            return 0
        with self.database.transaction() as db:
            return json_blocks.seal(db, self._encoded_range)

    def recompress_json_block(self, level: int = json_blocks.ARCHIVE_LEVEL,
                              stop: Callable[[], bool] = lambda: False) -> tuple[int, int] | None:
        """Compress the first block below `level` again at `level` (`json_blocks.recompress`: slow,
        outside any transaction; the write that follows is short). Returns (bytes before, after; both
        0 if stopped or if a change replaced the block meanwhile), or None when no block is left below
        `level`."""
        found = json_blocks.below(self._read(), level)
        if found is None:
            return None
        first_seq, body = found
        smaller = json_blocks.recompress(body, level, stop)
        if smaller is None:
            return 0, 0
        with self.database.transaction() as db:
            if not json_blocks.replace(db, first_seq, body, smaller, level):
                return 0, 0
        return len(body), min(len(body), len(smaller))

    def random(self, count: int, filters: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        where, params = self._where(filters)
        rows = self._read().execute(f"SELECT {ROW} FROM samples{where} ORDER BY random() LIMIT ?", [*params, count])
        return [self.to_record(r) for r in rows]

    def search(self, text: str, field: str | None, limit: int) -> list[dict[str, Any]]:
        """Samples whose text contains `text`, case-insensitively, as plain text (never a regex or
        a query language). The full-text index finds the rows holding its words as a phrase (the
        last word may be the start of a longer one); a substring check then keeps exact matches."""
        fields = [field] if field else list(SEARCH_FIELDS)
        words = _WORD.findall(text)
        if not words:
            return []
        query = f"{{{' '.join(fields)}}} : \"{' '.join(words)}\"*"
        pattern = f"%{_like_escape(text)}%"
        contains = " OR ".join(f"{f} LIKE ? ESCAPE '\\'" for f in fields)
        rows = self._read().execute(
            f"SELECT {ROW} FROM samples WHERE seq IN (SELECT rowid FROM samples_fts WHERE samples_fts MATCH ?) "
            f"AND ({contains}) ORDER BY seq LIMIT ?", [query, *([pattern] * len(fields)), limit])
        return [self.to_record(r) for r in rows]

    def iter_questions(self, chunk: int = 1000) -> Iterator[tuple[str, str]]:
        """(id, question) of every sample in insertion order, fetched in chunks."""
        cursor = self._read().execute("SELECT id, question FROM samples ORDER BY seq")
        while rows := cursor.fetchmany(chunk):
            for sample_id, question in rows:
                if type(sample_id) is not str or type(question) is not str:   # a row an older version damaged
                    (sample_id,), _ = repair_column("id", [sample_id])
                    (question,), _ = repair_column("question", [question])
                yield sample_id, question

    def columns(self, fields: Sequence[str], *, lengths: Mapping[str, str] | None = None,
                filters: Mapping[str, Any] | None = None) -> dict[str, list[Any]]:
        """A column-wise read, in insertion order: each of `fields` as a list of values
        (`quality_flags` decoded to lists, `simulated` to bools), plus, for each `name: field` in
        `lengths`, the character length of that field under `name` (the texts stay in the database)."""
        lengths = dict(lengths or {})
        names = [*fields, *lengths]
        unknown = [f for f in (*fields, *lengths.values()) if f not in COLUMNS or f == "extra"]
        if unknown or len(set(names)) != len(names):
            raise ValueError(f"bad column request: fields {list(fields)}, lengths {lengths}")
        if set(fields) <= set(LIGHT_COLUMNS) and set(lengths.values()) <= set(TEXT_LENGTHS):
            table = "samples_light"   # the narrow copy: the texts are not read
            selected = [*fields, *(light_length(field) for field in lengths.values())]
        else:
            table = "samples"
            selected = [*fields, *(f"length({field})" for field in lengths.values())]
        where, params = self._where(filters, table)
        rows = self._read().execute(f"SELECT {', '.join(selected)} FROM {table}{where} ORDER BY seq",
                                    params).fetchall()
        values = zip(*rows) if rows else ([] for _ in names)
        result: dict[str, list[Any]] = {name: list(column) for name, column in zip(names, values)}
        for name in fields:   # values an older version stored with the wrong type are repaired
            result[name] = repair_column(name, result[name])[0]
        for name in lengths:
            result[name] = [value if type(value) is int else 0 for value in result[name]]
        return result

    def column_arrays(self, fields: Sequence[str], *, lengths: Mapping[str, str] | None = None) -> dict[str, str] | None:
        """What `columns` reads, for every sample, each column as one JSON array built by the
        database (for readers that decode column-wise, such as Polars: no Python value per cell),
        from the narrow copy; `simulated` as 0/1, `quality_flags` as arrays ([] for none).
        `fields` must be short columns, `lengths` of the texts the copy measures (`ValueError`).
        None when some row holds a value of the wrong type: `columns` repairs those."""
        lengths = dict(lengths or {})
        if not set(fields) <= set(LIGHT_COLUMNS) or not set(lengths.values()) <= set(TEXT_LENGTHS) \
                or len({*fields, *lengths}) != len(fields) + len(lengths):
            raise ValueError(f"bad column request: fields {list(fields)}, lengths {lengths}")
        db = self._read()
        if db.execute("SELECT EXISTS (SELECT 1 FROM samples_light WHERE damaged)").fetchone()[0]:
            return None   # (an index holds just the damaged rows: this costs nothing)

        def array(field: str) -> str:
            if field == "quality_flags":
                return ("json_group_array(CASE WHEN quality_flags IS NULL OR quality_flags = '' THEN json('[]') "
                        "ELSE json(quality_flags) END)")
            return f"json_group_array({field})"

        selected = [array(f) for f in fields] + [f"json_group_array({light_length(f)})" for f in lengths.values()]
        # an aggregate over an ordered subquery keeps its order (SQLite does not flatten it)
        row = db.execute(f"SELECT {', '.join(selected)} FROM (SELECT * FROM samples_light ORDER BY seq)").fetchone()
        return dict(zip([*fields, *lengths], row))

    def damaged_rows(self, limit: int = 100) -> dict[str, Any]:
        """Rows holding values of the wrong type (written by older versions, or by hand): reads
        repair them on the way out (`to_record`, `columns`), this says which rows and fields.
        `{"count": n, "fields": {field: rows}, "samples": [{"id", "fields"}] (the first `limit`)}`.
        The first call scans the table (the column types in SQL, each suspect row confirmed in
        Python); after that the list only shrinks, as rows are edited (rewritten whole, repaired)
        or deleted: every write is checked, so no new damaged row can appear."""
        with self._scan_lock:   # one scan at a time
            if self._damaged is None:
                with self._lock:
                    self._touched = set()
                found = self._scan_damaged()
                with self._lock:
                    for sample_id in self._touched:
                        found.pop(sample_id, None)
                    self._touched = None
                    self._damaged = found
        with self._lock:
            damaged = list(self._damaged.items())
        fields: dict[str, int] = {}
        for _, names in damaged:
            for name in names:
                fields[name] = fields.get(name, 0) + 1
        return {"count": len(damaged), "fields": fields,
                "samples": [{"id": sample_id, "fields": list(names)} for sample_id, names in damaged[:limit]]}

    def damaged_count(self) -> int | None:
        """How many damaged rows `damaged_rows` found; None before its first scan (nothing is scanned here)."""
        with self._lock:
            return None if self._damaged is None else len(self._damaged)

    def _scan_damaged(self) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        cursor = self._read().execute(f"SELECT {ROW} FROM samples WHERE {_DAMAGED} ORDER BY seq")
        while rows := cursor.fetchmany(500):
            for row in rows:
                record, damaged = repair_record(row)
                if damaged:
                    found[record["id"]] = damaged
        return found


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


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
