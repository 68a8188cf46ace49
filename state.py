"""Batch state and its persistence.

`BatchState` is the state object of the contract (status endpoint, SSE frames), with bounded lists
that keep the latest entries and count the rest. `BatchRepository` saves it in the same SQLite
database as the samples on every change, logs every attempt, and finds the batches to resume.
"""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable

from store import Store

LIST_LIMIT = 50
RUNNING, COMPLETED, STOPPED, FAILED = "running", "completed", "stopped", "failed"

SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    started_at TEXT NOT NULL,
    completed_at TEXT,
    updated_at TEXT NOT NULL,
    state TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS batches_status ON batches(status);
CREATE TABLE IF NOT EXISTS batch_attempts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    batch_id TEXT NOT NULL,
    slot INTEGER NOT NULL,
    provider TEXT,
    model TEXT,
    outcome TEXT NOT NULL,
    category TEXT,
    latency REAL,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    message TEXT,
    sample_id TEXT,
    at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS batch_attempts_batch ON batch_attempts(batch_id);
"""


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat()


def new_batch_id() -> str:
    return f"batch_{int(time.time())}_{uuid.uuid4().hex[:8]}"


def push_bounded(items: list, item: Any, limit: int = LIST_LIMIT) -> None:
    """Append, keeping only the latest `limit` entries."""
    items.append(item)
    if len(items) > limit:
        del items[: len(items) - limit]


@dataclass
class BatchState:
    batch_id: str
    target_count: int                     # the dataset size this batch grows to
    start_count: int                      # the dataset size when it started
    total: int                            # samples this batch must add
    provider: str | None = None
    model: str | None = None
    topic_filter: str | None = None
    difficulty_filter: str | None = None
    reasoning_instruction: str | None = None
    sample_type_filter: str | None = None
    status: str = RUNNING
    running: bool = True
    samples_generated: int = 0
    progress: int = 0                     # percent
    total_tokens: int = 0
    current_sample: str | None = None
    current_provider: str | None = None
    current_model: str | None = None
    started_at: str = field(default_factory=utc_now)
    completed_at: str | None = None
    last_progress_at: str | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    errors_total: int = 0
    model_switches: list[dict[str, Any]] = field(default_factory=list)
    model_switches_total: int = 0
    provider_switches: list[dict[str, Any]] = field(default_factory=list)
    provider_switches_total: int = 0
    failed_models_by_provider: dict[str, list[str]] = field(default_factory=dict)
    consecutive_failures: int = 0
    skipped_topics: list[dict[str, Any]] = field(default_factory=list)
    circuit_breaker_summary: dict[str, Any] = field(default_factory=dict)
    waiting_until: str | None = None
    waiting_reason: str | None = None
    rate_per_minute: float = 0.0
    eta_seconds: float | None = None
    in_flight: int = 0
    attempts_total: int = 0
    rejected_total: int = 0
    final_error: str | None = None
    resumed_count: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BatchState":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    def add_error(self, error: dict[str, Any]) -> None:
        self.errors_total += 1
        push_bounded(self.errors, {"timestamp": utc_now(), **error})

    def history_record(self) -> dict[str, Any]:
        return {
            "id": self.batch_id, "batch_id": self.batch_id, "started_at": self.started_at,
            "completed_at": self.completed_at, "model": self.model, "provider": self.provider,
            "topic_filter": self.topic_filter, "difficulty_filter": self.difficulty_filter,
            "reasoning_instruction": self.reasoning_instruction, "sample_type_filter": self.sample_type_filter,
            "target": self.total, "target_count": self.target_count, "samples_generated": self.samples_generated,
            "tokens_used": self.total_tokens, "status": self.status, "errors": self.errors,
            "errors_total": self.errors_total, "model_switches": self.model_switches,
            "provider_switches": self.provider_switches, "final_error": self.final_error,
        }


class BatchRepository:
    """Batch rows and the attempt log, in the dataset's SQLite database."""

    def __init__(self, store: Store):
        self.store = store
        self.store.read().executescript(SCHEMA)

    def save(self, state: BatchState) -> None:
        now = utc_now()
        with self.store.transaction() as db:
            db.execute(
                "INSERT INTO batches (id, status, started_at, completed_at, updated_at, state) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET status = excluded.status, "
                "completed_at = excluded.completed_at, updated_at = excluded.updated_at, state = excluded.state",
                (state.batch_id, state.status, state.started_at, state.completed_at, now,
                 json.dumps(state.to_dict(), default=str)))

    def log_attempts(self, batch_id: str, slot: int, attempts: Iterable[dict[str, Any]],
                     sample_id: str | None = None) -> None:
        rows = [(batch_id, slot, a.get("provider"), a.get("model"), a.get("outcome"), a.get("category"),
                 a.get("latency"), a.get("prompt_tokens"), a.get("completion_tokens"), a.get("message"),
                 sample_id if a.get("outcome") == "success" else None, a.get("started_at") or utc_now())
                for a in attempts]
        if not rows:
            return
        with self.store.transaction() as db:
            db.executemany(
                "INSERT INTO batch_attempts (batch_id, slot, provider, model, outcome, category, latency, "
                "prompt_tokens, completion_tokens, message, sample_id, at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows)

    def get(self, batch_id: str) -> BatchState | None:
        row = self.store.read().execute("SELECT state FROM batches WHERE id = ?", (batch_id,)).fetchone()
        return BatchState.from_dict(json.loads(row[0])) if row else None

    def with_status(self, status: str) -> list[BatchState]:
        rows = self.store.read().execute("SELECT state FROM batches WHERE status = ? ORDER BY started_at",
                                         (status,)).fetchall()
        return [BatchState.from_dict(json.loads(r[0])) for r in rows]

    def history(self, limit: int = 200) -> list[BatchState]:
        rows = self.store.read().execute(
            "SELECT state FROM batches ORDER BY started_at DESC, rowid DESC LIMIT ?", (limit,)).fetchall()
        return [BatchState.from_dict(json.loads(r[0])) for r in rows]

    def stored_samples(self, batch_id: str) -> int:
        return self.store.count({"batch_id": batch_id})

    def rejection_counts(self) -> dict[str, int]:
        """Quality-check rejections in the attempt log, by flag code."""
        counts: dict[str, int] = {}
        rows = self.store.read().execute("SELECT message FROM batch_attempts WHERE outcome = 'rejected'")
        for (message,) in rows:
            head = (message or "").split("|", 1)[0].removeprefix("quality:")
            for code in filter(None, (c.strip() for c in head.split(","))):
                counts[code] = counts.get(code, 0) + 1
        return counts

    def attempts(self, batch_id: str, limit: int = 1000) -> list[dict[str, Any]]:
        rows = self.store.read().execute(
            "SELECT slot, provider, model, outcome, category, latency, prompt_tokens, completion_tokens, message, "
            "sample_id, at FROM batch_attempts WHERE batch_id = ? ORDER BY seq LIMIT ?", (batch_id, limit)).fetchall()
        return [dict(r) for r in rows]
