"""Reading samples: filters, counts, single rows, pages in insertion order, random picks, plain-text
search and every question. Part of `Store` (storage.store)."""
from __future__ import annotations

import re
import string
from typing import Any, Iterator, Mapping, Sequence

from storage.dialect import like_escape
from storage.fields import FILTER_COLUMNS, ROW
from storage.ordered_search import first_matches
from storage.repairs import repair_column
from storage.schema import SEARCH_COLUMNS

SEARCH_FIELDS = SEARCH_COLUMNS
_WORD = re.compile(r"[^\W_]+")   # what the index's unicode61 tokenizer calls a word
_WORD_END = frozenset(string.whitespace + string.punctuation)   # characters that end a word in both indexes


def search_words(text: str) -> tuple[list[str], list[bool]]:
    """The words of a search text as the indexes split it, and for each whether it is whole: the
    text goes on after it with a space or punctuation, so a match holds exactly that word (the
    others may be the start of a longer one)."""
    found = list(_WORD.finditer(text))
    return [m.group() for m in found], [text[m.end():m.end() + 1] in _WORD_END for m in found]


def page_seqs(table: str, where: str, order: str) -> str:
    """SQL: the seq numbers of one page (`LIMIT ? OFFSET ?`) of `table`'s rows in `order`. Picked
    apart from the rows' texts, an offset walks an index or the narrow copy, not the rows."""
    return f"SELECT seq FROM {table}{where} ORDER BY seq {order} LIMIT ? OFFSET ?"


class RecordReads:
    """Part of `Store` (it uses the store's `database`, `dialect` and `to_record`)."""

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
        if light == "samples" and not offset:
            sql = f"SELECT {ROW} FROM samples{where} ORDER BY seq {order} LIMIT ? OFFSET ?"
        else:   # pick the rows by the narrow copy (or the key's index), read only those rows' texts
            sql = f"SELECT {ROW} FROM samples WHERE seq IN ({page_seqs(light, where, order)}) ORDER BY seq {order}"
        for row in self.database.stream(sql, [*params, self.dialect.no_limit if limit is None else limit, offset],
                                        chunk):
            yield self.to_record(row)

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
        words, whole = search_words(text)
        if not words or self.unmatchable(text):
            return []
        match, query = self.dialect.search_match(words, fields, whole)
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
