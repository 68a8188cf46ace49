"""A psycopg connection speaking the store's shared SQL.

The store writes SQL once, in SQLite's style: `?` for positional and `:name` for named
parameters. `translate` rewrites it for psycopg (`%s`, `%(name)s`, a literal `%` doubled); `::`
casts are left alone. Rows (`Row`) read by position and by column name, like `sqlite3.Row`.
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Iterable, Iterator, Sequence

import psycopg

_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
_LITERAL = re.compile(r"('(?:[^']|'')*')")


@lru_cache(maxsize=512)
def translate(sql: str) -> str:
    """SQLite-style placeholders to psycopg's, outside string literals (a literal `%` is doubled
    everywhere, as psycopg wants)."""
    parts = _LITERAL.split(sql)
    return "".join(part.replace("%", "%%") if index % 2 else
                   _NAMED.sub(r"%(\1)s", part.replace("%", "%%").replace("?", "%s"))
                   for index, part in enumerate(parts))


class Row:
    """A result row: `row[0]`, `row["name"]`, `dict(row)`, iteration and unpacking."""

    __slots__ = ("_values", "_index")

    def __init__(self, values: Sequence[Any], index: dict[str, int]):
        self._values = values
        self._index = index

    def __getitem__(self, key: int | str) -> Any:
        return self._values[self._index[key]] if isinstance(key, str) else self._values[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def keys(self) -> list[str]:
        return list(self._index)

    def __repr__(self) -> str:
        return f"Row({dict(zip(self._index, self._values))!r})"


def row_factory(cursor: psycopg.Cursor[Any]) -> Any:
    names = [column.name for column in cursor.description or ()]
    index = {name: position for position, name in enumerate(names)}

    def make(values: Sequence[Any]) -> Row:
        return Row(values, index)
    return make


class Session:
    """One pooled connection for the length of a read or a transaction."""

    def __init__(self, connection: psycopg.Connection[Any]):
        self.connection = connection

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None, *,
                prepare: bool | None = None) -> psycopg.Cursor[Any]:
        """`prepare=False`: never as a prepared statement (psycopg prepares a query it has run five
        times), for a query whose best plan depends on its parameters."""
        cursor = self.connection.cursor()
        cursor.execute(translate(sql), params if params else None, prepare=prepare)
        return cursor

    def copy_out(self, sql: str) -> bytes:
        """What a `COPY ... TO STDOUT` statement writes, whole."""
        data = bytearray()
        with self.connection.cursor() as cursor, cursor.copy(sql) as copy:
            for block in copy:
                data += block
        return bytes(data)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any] | dict[str, Any]]) -> psycopg.Cursor[Any]:
        cursor = self.connection.cursor()
        cursor.executemany(translate(sql), rows)
        return cursor
