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
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

import orjson

from state import utc_now  # noqa: F401  (re-exported: one clock format for rows and batches)
from storage import json_blocks
from storage.database import Database
from storage.dialect import like_escape, sqlite_dialect
from storage.errors import (DuplicateId, DuplicateQuestion, InvalidRecord, StoreError,  # noqa: F401  (re-exported)
                            WriteFailed)
from storage.ordered_search import first_matches
from storage.question_key import question_key
from storage.records import (COUNT_COLUMNS, MAX_COUNT, NUMBER_COLUMNS, OPTIONAL_TEXT_COLUMNS, STORAGE_KEYS,
                             TEXT_COLUMNS, check_record, repair_column, repair_record)
from storage.schema import LIGHT_COLUMNS, SEARCH_COLUMNS, TEXT_LENGTHS, damaged_checks

if TYPE_CHECKING:
    from storage.postgres.stats_snapshot import ColumnCsv

CONTENT_FIELDS = ("question", "answer", "reasoning", "case_citation")
EDITABLE_FIELDS = CONTENT_FIELDS + ("topic", "difficulty", "sample_type")
REQUIRED_IMPORT_FIELDS = ("id", "question", "answer", "topic", "difficulty", "case_citation", "reasoning")
METADATA_FIELDS = ("provider", "model", "batch_id", "created_at", "updated_at", "prompt_tokens",
                   "completion_tokens", "latency", "attempts", "simulated", "quality_score", "quality_flags",
                   "duplicate_of")
COLUMNS = ("id",) + EDITABLE_FIELDS + METADATA_FIELDS + ("extra",)
WRITTEN = COLUMNS + ("question_key",)   # what a write sets: the columns and the unique question key
FILTER_COLUMNS = ("topic", "difficulty", "sample_type", "provider", "model", "batch_id")
SEARCH_FIELDS = SEARCH_COLUMNS
_WORD = re.compile(r"[^\W_]+")   # what the index's unicode61 tokenizer calls a word
_STORED_APART = frozenset((*COLUMNS, "seq"))   # keys a record's `extra` never holds (a set: tested for every key)
TAIL_KEPT = 2 * json_blocks.BLOCK_ROWS   # the JSON of at most this many unsealed rows written is kept for sealing
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
        if self.dialect.name == "postgresql":
            from storage.postgres.changes import ChangeFeed

            self._feed = ChangeFeed(source, source.origin, self._remote_changes, refresh=self._refresh_snapshot)
            self._feed.start()

    def close(self) -> None:
        """Close this thread's connection (and finished threads'); see `Database.close`. (PostgreSQL:
        stop following other servers' changes and close the pool.)"""
        if self._feed is not None:
            self._feed.stop()
        self.database.close()

    def _remote_changes(self, changes: list[tuple[str, str]]) -> None:
        """Other servers' committed writes (`storage.postgres.changes`) as change events: the rows
        as they are now ("update", which listeners apply to a new id as to a known one), and the
        ids gone ("delete")."""
        latest = {sample_id: kind for kind, sample_id in changes}
        changed = [sample_id for sample_id, kind in latest.items() if kind != "delete"]
        records: list[dict[str, Any]] = []
        for start in range(0, len(changed), 500):
            records += self.iter_records({"ids": changed[start:start + 500]})
        found = {record["id"] for record in records}
        gone = [sample_id for sample_id, kind in latest.items() if kind == "delete" or sample_id not in found]
        if records:
            self._notify(Change("update", tuple(records)))
        if gone:
            self._notify(Change("delete", ids=tuple(gone)))

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
        extra = {k: v for k, v in record.items() if k not in _STORED_APART}
        row["extra"] = json.dumps(extra, ensure_ascii=False) if extra else None
        row["question_key"] = question_key(row["question"])
        return row

    @staticmethod
    def to_record(row: Mapping[str, Any]) -> dict[str, Any]:
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
        sql = f"INSERT INTO samples ({', '.join(WRITTEN)}) VALUES ({', '.join(':' + n for n in WRITTEN)})"
        stored = [_as_read(row, checked) for row, checked in zip(rows, checked_records)]
        try:
            with self.database.transaction() as db:
                if self.dialect.json_blocks:   # SQLite: the rows' JSON is kept in compressed blocks
                    last = db.execute("SELECT coalesce(max(seq), 0) FROM samples").fetchone()[0]
                    db.executemany(sql, rows)
                    by_id = {record["id"]: record for record in stored}
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
                    by_id = {record["id"]: record for record in stored}
                    seqs = db.execute("SELECT seq, id FROM samples WHERE id = ANY(?)", (list(by_id),)).fetchall()
                    db.executemany("INSERT INTO samples_json (seq, body) VALUES (?, ?)",
                                   [(seq, encode_record(by_id[sample_id])) for seq, sample_id in seqs])
        except self.database.IntegrityError as exc:
            ids = [row["id"] for row in rows]
            if _conflict_column(exc) == "question_key" and len(set(ids)) == len(ids) and not self.exists(ids):
                raise self._duplicate_questions(rows) from None
            raise DuplicateId(str(exc)) from None
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
        with self._lock:
            self._tail.pop(row["seq"], None)   # (its new `updated_at` would refuse the JSON kept anyway)
        self._notify(Change("update", (record,)))
        return record

    def delete(self, sample_id: str) -> bool:
        if self.unmatchable(sample_id):
            return False
        with self.database.transaction() as db:
            deleted = db.execute("DELETE FROM samples WHERE id = ?", (sample_id,)).rowcount
        if deleted:
            self._notify(Change("delete", ids=(sample_id,)))
        return bool(deleted)

    # -- reads -----------------------------------------------------------------------------

    def _where(self, filters: Mapping[str, Any] | None, table: str = "samples") -> tuple[str, list[Any]]:
        """The WHERE clause for `filters` over `table` (`samples`, or the light copy, which has every
        filtered column)."""
        clauses, params = [], []
        for name, value in (filters or {}).items():
            if value is None or value == "":
                continue
            if name in ("ids", "exclude_flags"):
                value = [v for v in value if not self.unmatchable(v)]
            elif self.unmatchable(value):
                clauses.append("1 = 0")   # no stored text holds it
                continue
            if name in FILTER_COLUMNS:
                clauses.append(f"{name} = ?")
                params.append(value)
            elif name == "practice_area":
                clauses.append(f"(topic = ? OR topic {self.dialect.like_ci} ? ESCAPE '!')")
                params += [value, like_escape(value) + " - %"]
            elif name == "simulated":
                clauses.append("simulated = ?")
                params.append(1 if value else 0)
            elif name == "flag":
                clauses.append(self.dialect.flag_in.format(table=table))
                params.append(value)
            elif name == "exclude_flags":
                codes = list(value)
                clauses.append(self.dialect.flags_none_of(len(codes), table))
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
        light = self.dialect.light_table
        where, params = self._where(filters, light)
        with self.database.reading() as db:
            return db.execute(f"SELECT COUNT(*) FROM {light}{where}", params).fetchone()[0]

    def unmatchable(self, value: Any) -> bool:
        """Whether a looked-up text cannot match any stored one (NUL, where stored text cannot hold it)."""
        return not self.dialect.text_holds_nul and isinstance(value, str) and "\x00" in value

    def get(self, sample_id: str) -> dict[str, Any] | None:
        if self.unmatchable(sample_id):
            return None
        with self.database.reading() as db:
            row = db.execute(f"SELECT {ROW} FROM samples WHERE id = ?", (sample_id,)).fetchone()
        return self.to_record(row) if row else None

    def exists(self, ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        ids = [i for i in ids if not self.unmatchable(i)]
        with self.database.reading() as db:
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
        light = self.dialect.light_table
        where, params = self._where(filters, light)
        order = "DESC" if newest_first else "ASC"
        if light == "samples":
            sql = f"SELECT {ROW} FROM samples{where} ORDER BY seq {order} LIMIT ? OFFSET ?"
        else:   # pick the rows in the narrow copy, read only those rows' texts
            sql = (f"SELECT {ROW} FROM samples WHERE seq IN (SELECT seq FROM {light}{where} ORDER BY seq {order} "
                   f"LIMIT ? OFFSET ?) ORDER BY seq {order}")
        for row in self.database.stream(sql, [*params, self.dialect.no_limit if limit is None else limit, offset],
                                        chunk):
            yield self.to_record(row)

    def iter_json(self, filters: Mapping[str, Any] | None = None, *, limit: int | None = None, offset: int = 0,
                  newest_first: bool = False, chunk: int = 500) -> Iterator[bytes]:
        """What `iter_records` yields, each record encoded as JSON (`encode_record`), in chunks of
        bytes: the pieces of a JSON array's body, without brackets, to be joined with commas.
        SQLite: the whole dataset in insertion order comes from the compressed blocks (decompressed,
        not re-encoded); anything else is encoded row by row. PostgreSQL: each row's JSON is kept
        beside it (`samples_json`); a row without one (changed outside the store) is encoded here."""
        if self.dialect.json_blocks:
            if not any(v not in (None, "") for v in (filters or {}).values()) and limit is None and not offset \
                    and not newest_first:
                with self.database.reading() as db:
                    yield from json_blocks.plain_pieces(db, self._encoded_range)
                return
            records = self.iter_records(filters, limit=limit, offset=offset, newest_first=newest_first)
            while pieces := [encode_record(record) for record in itertools.islice(records, chunk)]:
                yield b",".join(pieces)
            return
        where, params = self._where(filters)
        order = "DESC" if newest_first else "ASC"
        sql = (f"SELECT samples.seq, samples_json.body FROM samples LEFT JOIN samples_json ON samples_json.seq = "
               f"samples.seq{where} ORDER BY samples.seq {order} LIMIT ? OFFSET ?")
        rows = self.database.stream(sql, [*params, self.dialect.no_limit if limit is None else limit, offset], chunk)
        while batch := list(itertools.islice(rows, chunk)):
            missing = [seq for seq, body in batch if body is None]
            encoded = self._encode(missing) if missing else {}
            yield b",".join(bytes(body) if body is not None else encoded[seq] for seq, body in batch)

    def _encode(self, seqs: Sequence[int]) -> dict[int, bytes]:
        with self.database.reading() as db:
            marks = ", ".join("?" for _ in seqs)
            rows = db.execute(f"SELECT seq, {ROW} FROM samples WHERE seq IN ({marks})", list(seqs)).fetchall()
            return {row["seq"]: encode_record(self.to_record({name: row[name] for name in COLUMNS})) for row in rows}

    def _encoded_range(self, db: Any, after: int, before: int | None, limit: int,
                       fresh: Mapping[int, tuple[str, bytes]] | None = None) -> list[tuple[int, bytes]]:
        """(seq, JSON) of up to `limit` rows with after < seq < before, in order (SQLite's blocks);
        a row in `fresh` ({seq: (updated_at, JSON)} of rows this store wrote) is taken from it instead
        of being read back while its `updated_at` is still the stored one (an edit, here or by another
        process, sets a new one)."""
        bound, params = ("", [after, limit]) if before is None else (" AND seq < ?", [after, before, limit])
        if not fresh:
            rows = db.execute(f"SELECT seq, {ROW} FROM samples WHERE seq > ?{bound} ORDER BY seq LIMIT ?", params)
            return [(row["seq"], encode_record(self.to_record(row))) for row in rows]
        found: dict[int, bytes] = {}
        seqs, older = [], []
        for seq, updated_at in db.execute(f"SELECT seq, updated_at FROM samples_light WHERE seq > ?{bound} "
                                          "ORDER BY seq LIMIT ?", params):
            seqs.append(seq)
            held = fresh.get(seq)
            if held is not None and held[0] == updated_at:
                found[seq] = held[1]
            else:
                older.append(seq)
        for start in range(0, len(older), 500):
            part = older[start:start + 500]
            rows = db.execute(f"SELECT seq, {ROW} FROM samples WHERE seq IN ({', '.join('?' for _ in part)})", part)
            found.update((row["seq"], encode_record(self.to_record(row))) for row in rows)
        return [(seq, found[seq]) for seq in seqs]

    def iter_json_zstd(self) -> Iterator[bytes]:
        """Every record, as the JSON array `iter_json` gives, compressed with zstd: SQLite's blocks
        compressed when rows were written, the rest on the way (`storage.json_blocks`). (PostgreSQL
        keeps no blocks: writers there are concurrent, and a row committed late into a sealed range
        would be missing from its block; every row is compressed on the way.)"""
        if not self.dialect.json_blocks:
            return json_blocks.stream_zstd(self.iter_json())
        return self._blocks_zstd()

    def _blocks_zstd(self) -> Iterator[bytes]:
        with self.database.reading() as db:
            yield from json_blocks.array_zstd(db, self._encoded_range)

    def seal_json(self, force: bool = False) -> int:
        """Compress the rows no block holds into blocks (`storage.json_blocks.seal`), when enough
        follow the last block or `force`; returns how many rows were sealed (0 on PostgreSQL).
        `add_many` seals as it writes; this is for rows stored before the blocks existed (the warm-up)."""
        if not self.dialect.json_blocks:
            return 0
        with self.database.reading() as db:
            if not force and json_blocks.unsealed_tail(db) < json_blocks.BLOCK_ROWS:
                return 0
        with self.database.transaction() as db:
            return json_blocks.seal(db, self._encoded_range)

    def recompress_json_block(self, level: int = json_blocks.ARCHIVE_LEVEL,
                              stop: Callable[[], bool] = lambda: False) -> tuple[int, int] | None:
        """Compress the first blocks due (`json_blocks.next_archive`: a block below `level`, or
        consecutive small blocks) again, as one block at `level` (`json_blocks.recompress`: slow,
        outside any transaction; the write that follows is short). Returns (bytes before, after; both
        0 if stopped or if a change replaced a block meanwhile), or None when no block is due
        (always on PostgreSQL, which keeps no blocks)."""
        if not self.dialect.json_blocks:
            return None
        with self.database.reading() as db:
            found = json_blocks.next_archive(db, level)
        if not found:
            return None
        smaller = json_blocks.recompress([body for _, body in found], level, stop)
        if smaller is None:
            return 0, 0
        with self.database.transaction() as db:
            if not json_blocks.replace(db, found, smaller, level):
                return 0, 0
        before = sum(len(body) for _, body in found)
        return before, min(before, len(smaller)) if len(found) == 1 else len(smaller)

    def random(self, count: int, filters: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        where, params = self._where(filters)
        with self.database.reading() as db:
            rows = db.execute(f"SELECT {ROW} FROM samples{where} ORDER BY random() LIMIT ?",
                              [*params, count]).fetchall()
        return [self.to_record(r) for r in rows]

    def search(self, text: str, field: str | None, limit: int) -> list[dict[str, Any]]:
        """Samples whose text contains `text`, case-insensitively, as plain text (never a regex or
        a query language). The full-text index (SQLite: FTS5; PostgreSQL: a GIN index on a
        tsvector) finds the rows holding its words; a substring check then keeps exact matches."""
        fields = [field] if field else list(SEARCH_FIELDS)
        words = _WORD.findall(text)
        if not words or self.unmatchable(text):
            return []
        match, query = self.dialect.search_match(words, fields)
        pattern = f"%{like_escape(text)}%"
        contains = " OR ".join(f"{f} {self.dialect.like_ci} ? ESCAPE '!'" for f in fields)
        with self.database.reading() as db:
            if self.dialect.name == "postgresql":   # a GIN index: its rows come out of order
                rows = first_matches(db, ROW, match, contains, [query, *([pattern] * len(fields))], limit)
            else:                                  # FTS5 gives rows in rowid (seq) order: it stops at `limit`
                rows = db.execute(f"SELECT {ROW} FROM samples WHERE {match} AND ({contains}) ORDER BY seq LIMIT ?",
                                  [query, *([pattern] * len(fields)), limit]).fetchall()
        return [self.to_record(r) for r in rows]

    def iter_questions(self, chunk: int = 1000) -> Iterator[tuple[str, str]]:
        """(id, question) of every sample in insertion order, fetched in chunks."""
        for sample_id, question in self.database.stream("SELECT id, question FROM samples ORDER BY seq", (), chunk):
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
        light = self.dialect.light_table
        if set(fields) <= set(LIGHT_COLUMNS) and set(lengths.values()) <= set(TEXT_LENGTHS):
            table = light   # SQLite: the narrow copy (the texts are not read)
            selected = [*fields, *(self.dialect.length_of(field) for field in lengths.values())]
        else:
            table = "samples"
            selected = [*fields, *(f"length({field})" for field in lengths.values())]
        where, params = self._where(filters, table)
        with self.database.reading() as db:
            rows = db.execute(f"SELECT {', '.join(selected)} FROM {table}{where} ORDER BY seq", params).fetchall()
        values = zip(*rows) if rows else ([] for _ in names)
        result: dict[str, list[Any]] = {name: list(column) for name, column in zip(names, values)}
        for name in fields:   # values an older version stored with the wrong type are repaired
            result[name] = repair_column(name, result[name])[0]
        for name in lengths:
            result[name] = [value if type(value) is int else 0 for value in result[name]]
        return result

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

    def column_arrays(self, fields: Sequence[str], *, lengths: Mapping[str, str] | None = None) -> dict[str, str] | None:
        """What `columns` reads, for every sample, each column as one JSON array built by the
        database (for readers that decode column-wise, such as Polars: no Python value per cell),
        from the narrow copy; `simulated` as 0/1, `quality_flags` as arrays ([] for none).
        `fields` must be short columns, `lengths` of the texts the copy measures (`ValueError`).
        None when some row holds a value of the wrong type: `columns` repairs those."""
        lengths = dict(lengths or {})
        _check_column_request(fields, lengths)
        dialect = self.dialect
        with self.database.reading() as db:
            if dialect.any_damaged and db.execute(dialect.any_damaged).fetchone()[0]:
                return None   # (an index holds just the damaged rows: this costs nothing)
            plain = [f for f in fields if f != "quality_flags"]
            texts = ["quality_flags"] if "quality_flags" in fields else []
            expressions = [*plain, *(dialect.length_of(f) for f in lengths.values())]
            row = db.execute(dialect.column_arrays(expressions, [dialect.flags_json] * len(texts))).fetchone()
        arrays = dict(zip([*plain, *lengths, *texts], row))
        return {name: arrays[name] for name in [*fields, *lengths]}

    def column_csv(self, fields: Sequence[str], *, lengths: Mapping[str, str] | None = None) -> ColumnCsv | None:
        """What `column_arrays` gives, as CSV built by the database (PostgreSQL's COPY), from the
        statistics snapshot and the rows changed since it (`storage.postgres.stats_snapshot`): see
        `ColumnCsv`. A line per sample, no header, the columns `seq` (so that no line starts with
        a stored text: a CSV reader may take a leading U+FEFF for a byte-order mark), then
        `[*fields, *lengths]` in that order; a null is an empty field, an empty text `""`;
        `simulated` as 0/1, `quality_flags` as the JSON text of an array ([] for none). None when
        the backend has no such export (SQLite: use `column_arrays`). `ValueError` as `column_arrays`."""
        lengths = dict(lengths or {})
        _check_column_request(fields, lengths)
        if self.dialect.column_csv is None:
            return None
        from storage.postgres import stats_snapshot

        return stats_snapshot.read(self.database, json.dumps([list(fields), list(lengths.items())]),
                                   self._copy_sql(fields, lengths))

    def _refresh_snapshot(self, columns: str) -> None:
        """Save a fresh statistics snapshot of the `columns` a saved one holds (the change feed
        calls this when the log kept for it has grown; see `stats_snapshot.due`)."""
        from storage.postgres import stats_snapshot

        fields, pairs = json.loads(columns)
        lengths = dict(pairs)
        _check_column_request(fields, lengths)   # a stored text: only known columns become SQL
        stats_snapshot.read(self.database, columns, self._copy_sql(fields, lengths), afresh=True)

    def _copy_sql(self, fields: Sequence[str], lengths: Mapping[str, str]) -> Callable[[str], str]:
        dialect = self.dialect
        columns = ["seq", *(dialect.flags_json if field == "quality_flags" else field for field in fields),
                   *(dialect.length_of(field) for field in lengths.values())]
        return lambda where: dialect.column_csv(columns, where)

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
        for row in self.database.stream(f"SELECT {ROW} FROM samples WHERE {self.dialect.damaged_condition} "
                                        "ORDER BY seq", (), 500):
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


def _check_column_request(fields: Sequence[str], lengths: Mapping[str, str]) -> None:
    """`ValueError` unless `fields` are short columns and `lengths` of measured texts, names unique."""
    if not set(fields) <= set(LIGHT_COLUMNS) or not set(lengths.values()) <= set(TEXT_LENGTHS) \
            or len({*fields, *lengths}) != len(fields) + len(lengths):
        raise ValueError(f"bad column request: fields {list(fields)}, lengths {lengths}")


def _damaged_condition(names: Sequence[str] = COLUMNS) -> str:
    return " OR ".join(f"({check})" for name, check in damaged_checks().items() if name in names) or "0"


_DAMAGED = _damaged_condition()


def _conflict_column(exc: BaseException) -> str:
    """Which unique column an insert or update broke: "question_key" or "id"."""
    constraint = getattr(getattr(exc, "diag", None), "constraint_name", None) or str(exc)
    return "question_key" if "question_key" in constraint else "id"
