"""The first matches of a search in insertion order, through an index that finds rows out of order
(PostgreSQL's GIN index on the search text).

One query (`WHERE <index match> AND <substring check> ORDER BY seq LIMIT n`) cannot stop at the
first `n`: it runs the substring check on every row the index finds, then sorts. A word in most
rows made that 1.5 s at 100,000 rows. Instead, in up to three steps, each stopping once `limit`
rows are found:

1. the first `WALK_ROWS` rows in order are checked directly (the substring check first, the
   cheaper one): a term in most rows is done here, having read a few dozen rows;
2. the index gives the seq numbers of the remaining candidates, in order, reading no text;
3. their texts are checked in chunks that double (`FIRST_CHUNK`, then twice as many, ...).

The result is exactly the single query's: every row up to the last one returned was checked.
"""
from __future__ import annotations

from typing import Any, Sequence

WALK_ROWS = 300
FIRST_CHUNK = 100


def first_matches(db: Any, select: str, match: str, contains: str, params: Sequence[Any],
                  limit: int) -> list[Any]:
    """Up to `limit` rows of `samples` (the columns `select`) for which both `match` (the index's
    condition, its parameter first in `params`) and `contains` (the rest of `params`) hold, in seq
    order. `db` executes SQL with `?` parameters (a PostgreSQL `Session`).

    No statement is prepared: a prepared statement's plan is, after five runs, one plan for every
    term, and at 1,000,000 rows the plan PostgreSQL kept made a search of `Donoghue` take 8.5 s
    (0.23 s planned for the term)."""
    if limit <= 0:
        return []
    query, patterns = params[0], list(params[1:])

    def execute(sql: str, values: Sequence[Any]) -> Any:
        return db.execute(sql, values, prepare=False)

    bound = execute("SELECT max(seq) FROM (SELECT seq FROM samples ORDER BY seq LIMIT ?) AS walk",
                    (WALK_ROWS,)).fetchone()[0]
    if bound is None:
        return []
    found = execute(f"SELECT {select} FROM samples WHERE seq <= ? AND ({contains}) AND {match} "
                    "ORDER BY seq LIMIT ?", (bound, *patterns, query, limit)).fetchall()
    if len(found) >= limit:
        return found
    candidates = [row[0] for row in execute(f"SELECT seq FROM samples WHERE seq > ? AND {match} ORDER BY seq",
                                            (bound, query)).fetchall()]
    start, size = 0, FIRST_CHUNK
    while start < len(candidates) and len(found) < limit:
        chunk = candidates[start:start + size]
        found += execute(f"SELECT {select} FROM samples WHERE seq = ANY(?) AND ({contains}) ORDER BY seq LIMIT ?",
                         (chunk, *patterns, limit - len(found))).fetchall()
        start, size = start + size, size * 2
    return found
