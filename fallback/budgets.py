"""Completion budgets that fit: `max_completion_tokens` learned per model from real answers.

A provider that charges `prompt + max_completion_tokens` up front (Cerebras) counts the whole
budget against its token limits, and every provider's limiter reservation starts from it, so a
budget far above what answers use wastes most of the token window. Each model keeps the
completion tokens of its latest answers (`pacing.budget_samples`); once it has
`pacing.budget_min_samples` of them, its budget is their `budget_percentile` times
`1 + budget_margin`, rounded up to 64 and kept between the configured bounds
(`min_completion_tokens`, `max_completion_tokens`: the configured budget is the ceiling). An
answer cut off (`finish_reason: length`) raises the budget by `budget_truncated_factor` at once,
and the cut-off length counts as a lower bound of what the model needed.
"""
from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from config.providers import PacingConfig
from fallback.metrics import percentile


@dataclass
class _Model:
    used: deque = field(default_factory=deque)
    floor: int = 0          # raised after a truncation: the budget stays at least this
    truncated: int = 0


class CompletionBudgets:
    def __init__(self, pacing: PacingConfig):
        self.pacing = pacing
        self._lock = threading.Lock()
        self._models: dict[tuple[str, str], _Model] = {}

    def _model(self, provider: str, model: str) -> _Model:
        return self._models.setdefault((provider, model), _Model(deque(maxlen=self.pacing.budget_samples)))

    def budget(self, provider: str, model: str, low: int, high: int) -> int:
        """The budget to send now, between `low` and `high` (the configured budget)."""
        with self._lock:
            stats = self._models.get((provider, model))
            return self._budget(stats, low, high)

    def _budget(self, stats: _Model | None, low: int, high: int) -> int:
        if stats is None or len(stats.used) < self.pacing.budget_min_samples:
            learned = high if stats is None or not stats.floor else max(stats.floor, high)
        else:
            typical = percentile(list(stats.used), self.pacing.budget_percentile) or high
            learned = max(stats.floor, int(math.ceil(typical * (1 + self.pacing.budget_margin) / 64) * 64))
        return max(low, min(high, learned))

    def observe(self, provider: str, model: str, completion_tokens: int | None, truncated: bool,
                budget: int) -> None:
        """An answer used `completion_tokens` of `budget`; `truncated`: it was cut off there."""
        with self._lock:
            stats = self._model(provider, model)
            if completion_tokens is not None and completion_tokens >= 0:
                stats.used.append(completion_tokens)
            if truncated:
                stats.truncated += 1
                stats.floor = max(stats.floor, int(math.ceil(budget * self.pacing.budget_truncated_factor)))

    def report(self, provider: str, model: str, low: int, high: int) -> dict[str, Any]:
        with self._lock:
            stats = self._models.get((provider, model))
            used = list(stats.used) if stats else []
            return {"budget": self._budget(stats, low, high), "configured": high, "minimum": low,
                    "learned": len(used) >= self.pacing.budget_min_samples or bool(stats and stats.floor),
                    "answers": len(used), "truncated": stats.truncated if stats else 0,
                    "p50": percentile(used, 50), "p95": percentile(used, 95)}
