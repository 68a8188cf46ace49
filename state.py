"""Batch state: the state object of the contract (status endpoint, SSE frames, history).

`BatchState` keeps bounded lists (the latest entries, with totals counting the rest). It is a plain
value: `storage.batches.BatchRepository` persists it, the batch worker changes it.

`errors` holds only failures that cost work (a sample attempt that failed other than by a rate
limit, a rejected output, a storage failure, the batch's own end); time spent waiting for a cooling
model or for budget goes to `waits`. `provider`/`model` name what produced most of the samples
(what was requested, `requested_provider`/`requested_model`, until something is produced);
`models_used`/`providers_used` count the samples each one produced. `requested_models` and
`strategy` are how the batch routes (saved with it, so a resumed batch routes the same way);
`cost_usd` is its stored samples' tokens at the configured prices.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any


LIST_LIMIT = 50
RUNNING, COMPLETED, STOPPED, FAILED = "running", "completed", "stopped", "failed"

def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat()


def utc_in(seconds: float) -> str:
    """The moment `seconds` from now, as `utc_now` writes it."""
    return (datetime.now(timezone.utc) + timedelta(seconds=seconds)).isoformat()


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
    provider: str | None = None           # the provider that produced the most samples (requested until then)
    model: str | None = None              # the model that produced the most samples (requested until then)
    requested_provider: str | None = None  # what the batch was started with (None: the default order)
    requested_model: str | None = None
    requested_models: list[str] | None = None   # the batch's own fallback order ("provider/model"), exactly
    strategy: str | None = None           # how candidates are ordered (order, cheapest, fastest, spread)
    topic_filter: str | None = None
    difficulty_filter: str | None = None
    reasoning_instruction: str | None = None
    sample_type_filter: str | None = None
    status: str = RUNNING
    running: bool = True
    samples_generated: int = 0
    progress: int = 0                     # percent
    total_tokens: int = 0
    cost_usd: float = 0.0                 # the stored samples' tokens at configured prices
    current_sample: str | None = None
    current_provider: str | None = None
    current_model: str | None = None
    started_at: str = field(default_factory=utc_now)
    completed_at: str | None = None
    last_progress_at: str | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    errors_total: int = 0
    waits: list[dict[str, Any]] = field(default_factory=list)
    waits_total: int = 0
    models_used: dict[str, int] = field(default_factory=dict)      # "provider/model" -> samples stored
    providers_used: dict[str, int] = field(default_factory=dict)   # provider -> samples stored
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
    eta_note: str | None = None
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

    def __post_init__(self) -> None:
        # Built with only `provider`/`model` (or saved before the requested values had their own
        # fields): those are what was requested.
        if self.requested_provider is None and self.requested_model is None and not self.providers_used:
            self.requested_provider, self.requested_model = self.provider, self.model

    def add_error(self, error: dict[str, Any]) -> None:
        self.errors_total += 1
        push_bounded(self.errors, {"timestamp": utc_now(), **error})

    def add_wait(self, wait: dict[str, Any]) -> None:
        self.waits_total += 1
        push_bounded(self.waits, wait)

    def count_samples(self, provider: str | None, model: str | None, count: int = 1) -> None:
        """`count` more samples stored from this provider and model; `provider`/`model` follow the top one."""
        if provider:
            self.providers_used[provider] = self.providers_used.get(provider, 0) + count
            if model:
                key = f"{provider}/{model}"
                self.models_used[key] = self.models_used.get(key, 0) + count
        self._name_producers()

    def set_samples_used(self, pairs: list[tuple[str | None, str | None]]) -> None:
        """Recount `models_used`/`providers_used` from the stored rows' (provider, model)."""
        self.models_used, self.providers_used = {}, {}
        for provider, model in pairs:
            self.count_samples(provider, model)
        self._name_producers()

    def _name_producers(self) -> None:
        if self.models_used:   # the first to reach the highest count wins a tie
            top = max(self.models_used, key=lambda k: self.models_used[k])
            self.provider, self.model = top.split("/", 1)
        elif self.providers_used:
            self.provider = max(self.providers_used, key=lambda k: self.providers_used[k])
            self.model = self.requested_model if self.provider == self.requested_provider else None
        else:
            self.provider, self.model = self.requested_provider, self.requested_model

    def history_record(self) -> dict[str, Any]:
        return {
            "id": self.batch_id, "batch_id": self.batch_id, "started_at": self.started_at,
            "completed_at": self.completed_at, "model": self.model, "provider": self.provider,
            "topic_filter": self.topic_filter, "difficulty_filter": self.difficulty_filter,
            "reasoning_instruction": self.reasoning_instruction, "sample_type_filter": self.sample_type_filter,
            "target": self.total, "target_count": self.target_count, "samples_generated": self.samples_generated,
            "tokens_used": self.total_tokens, "status": self.status, "errors": self.errors,
            "errors_total": self.errors_total, "waits": self.waits, "waits_total": self.waits_total,
            "model_switches": self.model_switches, "provider_switches": self.provider_switches,
            "final_error": self.final_error, "requested_provider": self.requested_provider,
            "requested_model": self.requested_model, "models_used": self.models_used,
            "providers_used": self.providers_used, "requested_models": self.requested_models,
            "strategy": self.strategy, "cost_usd": self.cost_usd,
        }
