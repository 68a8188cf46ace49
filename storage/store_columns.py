"""Column-wise reads of the samples (for the statistics frame) and the rows holding values of the
wrong type: parts of `Store`."""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from storage.fields import COLUMNS, ROW
from storage.repairs import repair_column, repair_record
from storage.schema import LIGHT_COLUMNS, TEXT_LENGTHS

if TYPE_CHECKING:
    from storage.postgres.stats_snapshot import ColumnCsv


class ColumnReads:
    """Part of `Store` (it uses the store's `database`, `dialect` and `_where`)."""

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

    def column_arrays(self, fields: Sequence[str], *, lengths: Mapping[str, str] | None = None) -> dict[str, str] | None:
        """What `columns` reads, for every sample, each column as one JSON array built by the
        database (for readers that decode column-wise, such as Polars: no Python value per cell),
        from the narrow copy; `simulated` as 0/1, `quality_flags` as arrays ([] for none).
        `fields` must be short columns, `lengths` of the texts the copy measures (`ValueError`).
        None when some row holds a value of the wrong type (`columns` repairs those), or when the
        backend reads columns by `column_csv` (PostgreSQL)."""
        lengths = dict(lengths or {})
        _check_column_request(fields, lengths)
        dialect = self.dialect
        if dialect.column_arrays is None:
            return None
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


class DamagedRows:
    """Part of `Store` (it uses the store's `database`, `dialect` and the scan state `__init__` sets)."""

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


def _check_column_request(fields: Sequence[str], lengths: Mapping[str, str]) -> None:
    """`ValueError` unless `fields` are short columns and `lengths` of measured texts, names unique."""
    if not set(fields) <= set(LIGHT_COLUMNS) or not set(lengths.values()) <= set(TEXT_LENGTHS) \
            or len({*fields, *lengths}) != len(fields) + len(lengths):
        raise ValueError(f"bad column request: fields {list(fields)}, lengths {lengths}")
