"""Per provider and model: attempts by outcome and category, latency percentiles and a latency
histogram, tokens; the log of switches from one (provider, model) to another; per routing
strategy, the samples it produced and their cost."""
from __future__ import annotations

import bisect
import threading
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from state import utc_now


@dataclass(frozen=True)
class SwitchEvent:
    from_provider: str | None
    to_provider: str
    from_model: str | None
    to_model: str
    reason: str
    category: str
    timestamp: str = field(default_factory=utc_now)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Upper bounds (seconds) of the latency histogram's buckets: a fast model answers in well under a
# second, a long completion from a busy one takes a minute or two. Past the last bound: +Inf.
LATENCY_BUCKETS: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)


@dataclass
class LatencyHistogram:
    """Counts of observed latencies per bucket (not cumulative; the last counts those above every
    bound), their sum and count. Every observation is kept in it, unlike the percentile window."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    total: float = 0.0
    count: int = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1  # a value on a bound is in its bucket
        self.total += seconds
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at or below it) per bucket, ending with (inf, count)."""
        running, out = 0, []
        for bound, count in zip((*LATENCY_BUCKETS, float("inf")), self.counts):
            running += count
            out.append((bound, running))
        return out

    def copy(self) -> "LatencyHistogram":
        return LatencyHistogram(list(self.counts), self.total, self.count)


@dataclass
class _ModelStats:
    attempts: int = 0
    successes: int = 0
    failures: Counter = field(default_factory=Counter)
    latencies: deque = field(default_factory=lambda: deque(maxlen=1000))
    histograms: dict[str, LatencyHistogram] = field(default_factory=dict)  # by outcome: success, failure
    prompt_tokens: int = 0
    completion_tokens: int = 0
    last_failure: dict[str, Any] | None = None
    success_latency: float | None = None   # moving average of successful calls (the `fastest` strategy)


# Weight of the newest success in `success_latency`: recent enough to follow a model that slows down,
# smooth enough that one slow answer does not reorder the models.
LATENCY_SMOOTHING = 0.3


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of the values, None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


class Metrics:
    def __init__(self, max_switches: int = 500):
        self._lock = threading.Lock()
        self._models: dict[tuple[str, str], _ModelStats] = {}
        self._switches: deque[SwitchEvent] = deque(maxlen=max_switches)
        self.switch_count = 0
        self.switches_from: Counter = Counter()
        self.switches_to: Counter = Counter()
        self._listeners: list[Callable[[SwitchEvent], None]] = []
        self._strategies: dict[str, list[float]] = {}   # strategy -> [samples, cost in USD]

    def on_switch(self, listener: Callable[[SwitchEvent], None]) -> None:
        self._listeners.append(listener)

    def record_attempt(self, provider: str, model: str, *, category: str | None, latency: float | None,
                       prompt_tokens: int | None = None, completion_tokens: int | None = None,
                       message: str | None = None) -> None:
        """One call to a model; `category` None means it produced a sample."""
        with self._lock:
            stats = self._models.setdefault((provider, model), _ModelStats())
            stats.attempts += 1
            if category is None:
                stats.successes += 1
            else:
                stats.failures[category] += 1
                stats.last_failure = {"category": category, "message": message, "at": utc_now()}
            if latency is not None:
                if category is None:
                    previous = stats.success_latency
                    stats.success_latency = latency if previous is None else \
                        previous + LATENCY_SMOOTHING * (latency - previous)
                stats.latencies.append(latency)
                outcome = "success" if category is None else "failure"
                stats.histograms.setdefault(outcome, LatencyHistogram()).observe(latency)
            stats.prompt_tokens += prompt_tokens or 0
            stats.completion_tokens += completion_tokens or 0

    def record_sample(self, strategy: str, cost_usd: float) -> None:
        """A sample produced by a run ordered by `strategy`, costing `cost_usd` at configured prices."""
        with self._lock:
            totals = self._strategies.setdefault(strategy, [0, 0.0])
            totals[0] += 1
            totals[1] += cost_usd

    def strategy_report(self) -> dict[str, dict[str, float]]:
        """Per strategy used so far: `samples` and their `cost_usd`."""
        with self._lock:
            return {name: {"samples": int(samples), "cost_usd": round(cost, 6)}
                    for name, (samples, cost) in sorted(self._strategies.items())}

    def record_switch(self, event: SwitchEvent) -> None:
        with self._lock:
            self._switches.append(event)
            self.switch_count += 1
            self.switches_from[(event.from_provider, event.from_model)] += 1
            self.switches_to[(event.to_provider, event.to_model)] += 1
            listeners = list(self._listeners)
        for listener in listeners:
            listener(event)

    def switches(self) -> list[dict[str, Any]]:
        with self._lock:
            return [e.to_dict() for e in self._switches]

    def success_latency(self, provider: str, model: str) -> float | None:
        """Recent latency of the model's successful calls (a moving average), None before its first."""
        with self._lock:
            stats = self._models.get((provider, model))
            return stats.success_latency if stats else None

    def latency_histograms(self, provider: str, model: str) -> dict[str, LatencyHistogram]:
        """Copies of the model's latency histograms by outcome ("success", "failure"); only observed ones."""
        with self._lock:
            stats = self._models.get((provider, model))
            return {outcome: h.copy() for outcome, h in sorted(stats.histograms.items())} if stats else {}

    def model_report(self, provider: str, model: str) -> dict[str, Any]:
        with self._lock:
            stats = self._models.get((provider, model)) or _ModelStats()
            latencies = list(stats.latencies)
            failures = dict(stats.failures)
            report = {
                "attempts": stats.attempts, "successes": stats.successes,
                "failures": sum(failures.values()), "failures_by_category": failures,
                "success_rate": round(stats.successes / stats.attempts, 4) if stats.attempts else None,
                "prompt_tokens": stats.prompt_tokens, "completion_tokens": stats.completion_tokens,
                "last_failure": stats.last_failure,
                "switches_from": self.switches_from[(provider, model)],
                "switches_to": self.switches_to[(provider, model)],
            }
        report["latency_seconds"] = {f"p{q}": percentile(latencies, q) for q in (50, 95, 99)}
        return report
