"""Batch rows and the attempt log, in the dataset's database (tables: `storage.schema`)."""
from __future__ import annotations

import json
from typing import Any, Iterable

from state import BatchState, utc_now
from storage.store import Store


class BatchRepository:
    """Batch rows and the attempt log, in the dataset's database (the one `store` opened)."""

    def __init__(self, store: Store):
        self.store = store
        self.database = store.database

    def save(self, state: BatchState) -> None:
        now = utc_now()
        with self.database.transaction() as db:
            db.execute(
                "INSERT INTO batches (id, status, started_at, completed_at, updated_at, state) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET status = excluded.status, "
                "completed_at = excluded.completed_at, updated_at = excluded.updated_at, state = excluded.state",
                (state.batch_id, state.status, state.started_at, state.completed_at, now,
                 json.dumps(state.to_dict(), default=str)))

    def log_attempts(self, batch_id: str, slot: int, attempts: Iterable[dict[str, Any]],
                     sample_id: str | None = None) -> None:
        rows = [(batch_id, slot, a.get("provider"), a.get("model"), a.get("outcome"), a.get("category"),
                 a.get("latency"), a.get("prompt_tokens"), a.get("completion_tokens"), _printable(a.get("message")),
                 sample_id if a.get("outcome") == "success" else None, a.get("started_at") or utc_now())
                for a in attempts]
        if not rows:
            return
        with self.database.transaction() as db:
            db.executemany(
                "INSERT INTO batch_attempts (batch_id, slot, provider, model, outcome, category, latency, "
                "prompt_tokens, completion_tokens, message, sample_id, at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows)

    def get(self, batch_id: str) -> BatchState | None:
        if self.store.unmatchable(batch_id):
            return None
        with self.database.reading() as db:
            row = db.execute("SELECT state FROM batches WHERE id = ?", (batch_id,)).fetchone()
        return BatchState.from_dict(json.loads(row[0])) if row else None

    def with_status(self, status: str) -> list[BatchState]:
        with self.database.reading() as db:
            rows = db.execute("SELECT state FROM batches WHERE status = ? ORDER BY started_at", (status,)).fetchall()
        return [BatchState.from_dict(json.loads(r[0])) for r in rows]

    def history(self, limit: int = 200) -> list[BatchState]:
        with self.database.reading() as db:
            rows = db.execute(f"SELECT state FROM batches ORDER BY started_at DESC, {self.store.dialect.batch_order} "
                              "LIMIT ?", (limit,)).fetchall()
        return [BatchState.from_dict(json.loads(r[0])) for r in rows]

    def stored_samples(self, batch_id: str) -> int:
        return self.store.count({"batch_id": batch_id})

    def rejection_counts(self) -> dict[str, int]:
        """Quality-check rejections in the attempt log, by flag code."""
        counts: dict[str, int] = {}
        with self.database.reading() as db:
            rows = db.execute("SELECT message FROM batch_attempts WHERE outcome = 'rejected'").fetchall()
        for (message,) in rows:
            head = (message or "").split("|", 1)[0].removeprefix("quality:")
            for code in filter(None, (c.strip() for c in head.split(","))):
                counts[code] = counts.get(code, 0) + 1
        return counts

    def attempts(self, batch_id: str, limit: int = 1000) -> list[dict[str, Any]]:
        if self.store.unmatchable(batch_id):
            return []
        with self.database.reading() as db:
            rows = db.execute(
                "SELECT slot, provider, model, outcome, category, latency, prompt_tokens, completion_tokens, message, "
                "sample_id, at FROM batch_attempts WHERE batch_id = ? ORDER BY seq LIMIT ?", (batch_id, limit)).fetchall()
        return [dict(r) for r in rows]


def _printable(message: Any) -> Any:
    """A provider's message as the attempt log keeps it: NUL (which PostgreSQL's text cannot hold) shown as U+FFFD."""
    return message.replace("\x00", "\ufffd") if isinstance(message, str) else message
