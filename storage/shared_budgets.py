"""Completion-token samples pooled by every server on one PostgreSQL database (`fallback.budgets`).

Each server appends its answers' completion tokens to `budget_samples` (one INSERT, tagged with
its `origin`) and reads the other servers' rows incrementally: the rows of transactions that
ended below a snapshot's oldest running xid of this database since the last read (`since(horizon)`, the same rule as the sample
change feed, `storage.postgres.changes`: a transaction still open at that moment has an xid at or
above the new horizon, so no row is skipped whatever order transactions commit in). The table is
bounded: `prune` keeps the latest `keep` rows of a model.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass

from storage.coordination import COMMITTED_HORIZON, Connect, once_more

STATEMENTS = (
    """CREATE TABLE budget_samples (
        seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
        origin text NOT NULL,
        provider text NOT NULL,
        model text NOT NULL,
        tokens integer NOT NULL,
        cut_off boolean NOT NULL
    )""",
    "CREATE INDEX budget_samples_xid ON budget_samples (xid)",
    "CREATE INDEX budget_samples_model ON budget_samples (provider, model, seq)",
)


@dataclass(frozen=True)
class BudgetSample:
    provider: str
    model: str
    tokens: int
    cut_off: bool


class SharedBudgetSamples:
    """This server's view of `budget_samples`: `append` its own answers, `since` the others'."""

    def __init__(self, connect: Connect, origin: str | None = None):
        self.connect = connect
        self.origin = origin or uuid.uuid4().hex

    def append(self, provider: str, model: str, tokens: int, cut_off: bool) -> None:
        with self.connect() as db:
            db.execute("INSERT INTO budget_samples (origin, provider, model, tokens, cut_off) VALUES (%s, %s, %s, %s, %s)",
                       (self.origin, provider, model, tokens, cut_off))

    def since(self, horizon: int) -> tuple[int, list[BudgetSample]]:
        """(the new horizon, the other servers' samples committed from `horizon` up to it), in
        insertion order. Start from horizon 0: every sample kept."""
        return once_more(lambda: self._since(horizon))

    def _since(self, horizon: int) -> tuple[int, list[BudgetSample]]:
        with self.connect() as db:
            rows = db.execute(
                "SELECT h.horizon::text, b.provider, b.model, b.tokens, b.cut_off "
                f"FROM (SELECT {COMMITTED_HORIZON} AS horizon) AS h "
                "LEFT JOIN budget_samples AS b ON b.xid >= %s::text::xid8 AND b.xid < h.horizon AND b.origin <> %s "
                "ORDER BY b.seq", (str(horizon), self.origin)).fetchall()
        return int(rows[0][0]), [BudgetSample(r[1], r[2], int(r[3]), bool(r[4])) for r in rows if r[1] is not None]

    def prune(self, provider: str, model: str, keep: int) -> None:
        """Delete the model's samples older than its latest `keep`."""
        with self.connect() as db:
            db.execute("DELETE FROM budget_samples WHERE provider = %s AND model = %s AND seq <= ("
                       "SELECT seq FROM budget_samples WHERE provider = %s AND model = %s "
                       "ORDER BY seq DESC OFFSET %s LIMIT 1)", (provider, model, provider, model, keep))
