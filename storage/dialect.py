"""What differs between the two backends' SQL, in one place; everything else is shared.

The store and the batch repository write their SQL once, in SQLite's style (`?` and `:name`
placeholders); the PostgreSQL session translates the placeholders (`storage.postgres.session`).
Where the two engines really differ (JSON arrays, full-text search, case-insensitive LIKE, "no
limit", row locks, the damaged-row check) a `Dialect` holds each side's fragment.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

# The PostgreSQL full-text document: the searchable fields, every run of characters other than
# letters and digits made a space (so words split as SQLite's unicode61 tokenizer splits them), in
# the `simple` configuration (lower case, no stemming, no stop words). The GIN index
# (`storage.postgres.schema`) is on exactly this expression, which the search repeats.
SEARCH_COLUMNS = ("question", "answer", "reasoning", "case_citation", "topic")
SEARCH_DOCUMENT = ("to_tsvector('simple'::regconfig, regexp_replace("
                   + " || ' ' || ".join(SEARCH_COLUMNS) + ", '[^[:alnum:]]+', ' ', 'g'))")

LIKE_ESCAPE = "!"   # the same literal in both dialects (a backslash is not: PostgreSQL reads '\\' as two)


def like_escape(text: str) -> str:
    """`text` as a LIKE pattern matching itself (use with `ESCAPE '!'`)."""
    return text.replace("!", "!!").replace("%", "!%").replace("_", "!_")


@dataclass(frozen=True)
class Dialect:
    name: str                       # "sqlite" or "postgresql"
    flag_in: str                    # SQL true if the row's quality_flags hold the flag `?` ({table}: the table read)
    flags_none_of: Callable[[int, str], str]   # SQL true if they hold none of n flags `?, ?...` (n, table)
    like_ci: str                    # the case-insensitive LIKE operator
    no_limit: int | None            # the LIMIT value meaning "all rows"
    text_holds_nul: bool            # whether stored text can contain U+0000 (else a value with it matches nothing)
    for_update: str                 # appended to a SELECT that is followed by an UPDATE of the row
    batch_order: str                # the tie-breaker for batches started at the same instant
    damaged_condition: str          # SQL true for a row that may hold a value of the wrong type
    search_match: Callable[[list[str], list[str], list[bool]], tuple[str, str]]
    # (SQL true for a row whose indexed text holds these words, its parameter): words, fields
    # searched, and which words are whole (the text goes on after them with a space or punctuation)
    light_table: str                # what counts, short columns and lengths are read from
    length_of: Callable[[str], str]  # the character length of a text field, in `light_table`
    flags_json: str                 # quality_flags as JSON text of an array ([] for none)
    column_arrays: Callable[[list[str], list[str]], str] | None
    # SELECT of one JSON array per expression, in seq order: the values of the first list's, then
    # the second list's, whose values are JSON texts (each becomes an element as it is); None: the
    # backend reads columns by `column_csv` instead
    column_csv: Callable[[list[str], str], str] | None
    # COPY of the expressions' values as CSV, a line per row matching the SQL condition, in seq
    # order; None: the backend has no such export
    any_damaged: str | None         # SELECT: does any row of `light_table` hold a value of the wrong type
    json_blocks: bool               # whether the rows' JSON is also kept compressed in blocks


def _sqlite_arrays(expressions: list[str], json_texts: list[str]) -> str:
    # NOT INDEXED: a scan of the table itself, whose rows are in seq order (seq is its rowid), so the
    # aggregates see them in that order (an ordered subquery would copy every row first: 40% more
    # time). JSON texts are joined as they are: json() would parse each one again.
    selected = [*(f"json_group_array({e})" for e in expressions),
                *(f"'[' || coalesce(group_concat({e}, ','), '') || ']'" for e in json_texts)]
    return f"SELECT {', '.join(selected)} FROM samples_light NOT INDEXED"


def _pg_csv(expressions: list[str], where: str) -> str:
    # COPY writes each value with its type's text output alone: no JSON built per value, and the
    # client reads CSV with Polars' multithreaded reader (100k rows: a third less time, a quarter less CPU)
    return f"COPY (SELECT {', '.join(expressions)} FROM samples WHERE {where} ORDER BY seq) TO STDOUT (FORMAT csv)"


def _sqlite_search(words: list[str], fields: list[str], whole: list[bool]) -> tuple[str, str]:
    """FTS5: the words as a phrase in the fields, the last word possibly the start of a longer one
    (a phrase's other words are whole words already: `whole` adds nothing here)."""
    return ("seq IN (SELECT rowid FROM samples_fts WHERE samples_fts MATCH ?)",
            f"{{{' '.join(fields)}}} : \"{' '.join(words)}\"*")


def _pg_search(words: list[str], fields: list[str], whole: list[bool]) -> tuple[str, str]:
    """tsvector: every word (the index spans all the searchable fields; the substring check that
    follows keeps the field and the phrase exact), each possibly the start of a longer one unless
    `whole` (the text has a space or punctuation after it). A prefix is costly: at 1,000,000 rows,
    `'1932':* & 'ac':* & '562':*` took 14 s (every word starting "ac" gathered, and the rows
    checked again), `'1932' & 'ac' & '562':*` 0.33 s."""
    return (f"{SEARCH_DOCUMENT} @@ to_tsquery('simple', ?)",
            " & ".join(f"'{word}'" if ended else f"'{word}':*" for word, ended in zip(words, whole)))


def _sqlite_none_of(count: int, table: str) -> str:
    marks = ", ".join("?" for _ in range(count)) or "NULL"
    return f"NOT EXISTS (SELECT 1 FROM json_each({table}.quality_flags) WHERE value IN ({marks}))"


def _pg_none_of(count: int, table: str) -> str:
    marks = ", ".join("?" for _ in range(count)) or "NULL"
    return ("NOT EXISTS (SELECT 1 FROM jsonb_array_elements_text(COALESCE(quality_flags, '[]')::jsonb) AS flag "
            f"WHERE flag IN ({marks}))")


def sqlite_dialect(damaged_condition: str) -> Dialect:
    return Dialect(
        name="sqlite",
        flag_in="EXISTS (SELECT 1 FROM json_each({table}.quality_flags) WHERE value = ?)",
        flags_none_of=_sqlite_none_of,
        like_ci="LIKE",             # SQLite's LIKE ignores ASCII case
        no_limit=-1,
        text_holds_nul=True,        # rows an older version stored may hold it
        for_update="",              # BEGIN IMMEDIATE already holds the write lock
        batch_order="rowid DESC",
        damaged_condition=damaged_condition,
        search_match=_sqlite_search,
        light_table="samples_light",  # a narrow copy kept by triggers (schema migration 4)
        length_of=lambda field: f"{field}_length",
        flags_json="CASE WHEN quality_flags IS NULL OR quality_flags = '' THEN '[]' ELSE quality_flags END",
        column_arrays=_sqlite_arrays,
        column_csv=None,            # no COPY: `column_arrays` (json_group_array) is SQLite's fast read
        any_damaged="SELECT EXISTS (SELECT 1 FROM samples_light WHERE damaged)",
        json_blocks=True,
    )


# PostgreSQL's columns are typed, and every write is checked: a stored value cannot have the wrong
# type, so no row is suspect (an older version's SQLite file is where damaged rows come from).
POSTGRES = Dialect(
    name="postgresql",
    flag_in="COALESCE(quality_flags, '[]')::jsonb @> jsonb_build_array(CAST(? AS text))",
    flags_none_of=_pg_none_of,
    like_ci="ILIKE",
    no_limit=None,
    text_holds_nul=False,           # PostgreSQL's text cannot, and refuses it even as a parameter
    for_update=" FOR UPDATE",
    batch_order="seq DESC",
    damaged_condition="FALSE",
    search_match=_pg_search,
    light_table="samples",          # typed columns, long texts TOASTed out of line: no copy needed
    length_of=lambda field: f"{field}_length",   # stored generated columns (PostgreSQL migration 5)
    flags_json="COALESCE(NULLIF(quality_flags, ''), '[]')",
    column_arrays=None,          # read by COPY (`column_csv`): faster than json_agg
    column_csv=_pg_csv,
    any_damaged=None,
    json_blocks=False,
)
