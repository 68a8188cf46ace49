"""What people watching a batch see: part of `BatchRun` (batch.worker).

What they see is what happened: time spent waiting because every candidate was cooling down or
out of budget is a `waits` entry (when, until when, and what held every candidate), never an
error; a rate-limited attempt (429) is pacing, not lost work. `errors` holds the failures that
cost work: attempts that failed otherwise, rejected outputs, storage failures, the batch's end.
`rate_per_minute` counts the samples stored in the last minute (waits included) and
`eta_seconds` adds the rest of a current wait, which `eta_note` then explains. A topic that keeps
failing is skipped for a while.
"""
from __future__ import annotations

import time
from typing import Any

from batch.rotation import Slot
from fallback.metrics import SwitchEvent
from fallback.router import AttemptRecord, Cancelled, GaveUp, NoRecovery, RoutingError, Stopped, describe
from generation.engine import GenerationResult
from state import FAILED, push_bounded, utc_in, utc_now

CONTENT_CATEGORIES = ("invalid_output", "bad_request")   # failures that say more about the topic than the model
PACING_CATEGORIES = ("rate_limit", "quota_exhausted")   # refusals that cost no work: a reason to wait
RATE_WINDOW_SECONDS = 60.0   # rate_per_minute counts the samples stored over the last minute...
RATE_MIN_SPAN_SECONDS = 10.0  # ...or since the start, but never extrapolates from less than this
HOLDS = ("cooling", "budget", "disabled")   # what keeps a candidate out (`Router.report`'s `why`) in a wait
WAIT_MERGE_SECONDS = 1.0     # a wait found this soon after the current one's end continues it
SKIP_LOG_SECONDS = 60   # budget/cooldown skips of the same model are logged once a minute


class Bookkeeping:
    """Part of `BatchRun` (it uses the run's `state`, `lock`, `settings`, `engine`, `stored`,
    `stop_event`, its bookkeeping fields set in `__init__`, `_finish`, `_save` and `_sleep`)."""

    def _record_success(self, slot: Slot, result: GenerationResult) -> None:
        s = self.state
        now = time.monotonic()
        s.samples_generated = self.stored
        s.progress = int(100 * self.stored / s.total) if s.total else 100
        s.total_tokens += result.total_tokens
        s.cost_usd = round(s.cost_usd + result.cost_usd, 8)
        s.attempts_total += len(result.attempts)
        s.current_provider, s.current_model = result.provider, result.model
        s.count_samples(result.provider, result.model)
        s.last_progress_at = utc_now()
        s.consecutive_failures = 0
        self._failed_runs = 0
        s.waiting_until = s.waiting_reason = None
        self._close_wait()
        self._topic_failures.pop(slot.topic.label, None)
        self._completions.append(now)
        self._update_rate()
        self._record_switches(result.switches)
        self._refresh_summary()

    def _update_rate(self) -> None:
        """Under the lock: `rate_per_minute` from the samples stored over the last minute, waits
        included (at least RATE_MIN_SPAN_SECONDS, so a quick first few are not extrapolated), and
        `eta_seconds`: the rest of a current wait plus the remaining samples at that rate."""
        s = self.state
        now = time.monotonic()
        while self._completions and self._completions[0] < now - RATE_WINDOW_SECONDS:
            self._completions.popleft()
        span = max(RATE_MIN_SPAN_SECONDS, min(RATE_WINDOW_SECONDS, now - self._started_mono))
        s.rate_per_minute = round(len(self._completions) * 60.0 / span, 2)
        remaining = s.total - self.stored
        wait_left = max(0.0, self._open_wait_until - now) if self._open_wait is not None else 0.0
        if remaining <= 0:
            s.eta_seconds, s.eta_note = 0.0, None
            return
        s.eta_seconds = round(wait_left + remaining * 60.0 / s.rate_per_minute, 1) if s.rate_per_minute > 0 else None
        if wait_left <= 0:
            s.eta_note = None if s.eta_seconds is not None else "unknown: no sample stored in the last minute"
        elif s.eta_seconds is None:
            s.eta_note = (f"unknown: waiting {wait_left:.0f}s for a cooling model or budget, "
                          "and no sample stored in the last minute")
        else:
            s.eta_note = (f"waiting {wait_left:.0f}s for a cooling model or budget; the estimate "
                          "includes the wait")

    # -- waits -----------------------------------------------------------------------------

    def _record_wait(self, reason: str, seconds: float, blocked: list[dict[str, Any]], kind: str) -> None:
        """Under the lock: the batch cannot go on for about `seconds`. A wait that starts before
        (or just after) the current one ends continues it; otherwise a new `waits` entry."""
        now = time.monotonic()
        until = now + max(0.0, seconds)
        current = self._open_wait
        if current is not None and now <= self._open_wait_until + WAIT_MERGE_SECONDS and current["kind"] == kind:
            self._open_wait_until = max(self._open_wait_until, until) if kind != "all_cooling" else until
            current.update(until=utc_in(self._open_wait_until - now), reason=reason, blocked=blocked)
            current["checks"] += 1
        else:
            self._open_wait_until = until
            self._open_wait = {"from": utc_now(), "until": utc_in(seconds), "reason": reason, "kind": kind,
                               "blocked": blocked, "samples_generated": self.stored, "checks": 1}
            self.state.add_wait(self._open_wait)
        self._update_rate()

    def _close_wait(self) -> None:
        """Under the lock: the batch moves again (or ended); the next wait is a new entry."""
        if self._open_wait is not None:
            self._open_wait["ended_at"] = utc_now()
        self._open_wait, self._open_wait_until = None, 0.0

    def _record_switches(self, switches: list[SwitchEvent]) -> None:
        now = time.monotonic()
        for event in switches:
            if event.reason.startswith(("out of budget", "cooling:")):
                key = (event.from_provider or "", event.from_model or "")
                if now - self._last_skip_logged.get(key, -1e9) < SKIP_LOG_SECONDS:
                    continue
                self._last_skip_logged[key] = now
            s = self.state
            if event.from_provider != event.to_provider:
                s.provider_switches_total += 1
                push_bounded(s.provider_switches, {**event.to_dict(), "samples_generated": self.stored})
            else:
                s.model_switches_total += 1
                push_bounded(s.model_switches, {"from_model": event.from_model, "to_model": event.to_model,
                                                "provider": event.to_provider, "reason": event.reason,
                                                "category": event.category, "timestamp": event.timestamp,
                                                "samples_generated": self.stored})

    def _refresh_summary(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._summary_at < 1.0:
            return
        self._summary_at = now
        summary: dict[str, Any] = {}
        for name, models in self.engine.model_states().items():
            not_ok = {model: state for model, state in models.items() if state["state"] != "ok"}
            summary[name] = {"state": self.engine.provider_state(name)["state"], "not_ok_models": not_ok}
        self.state.failed_models_by_provider = {name: list(s["not_ok_models"]) for name, s in summary.items()
                                                if s["not_ok_models"]}
        self.state.circuit_breaker_summary = summary

    def _on_failure(self, slot: Slot, exc: RoutingError) -> None:
        if isinstance(exc, Cancelled):
            return
        with self.lock:
            if self.stop_event.is_set():
                return
            s = self.state
            s.attempts_total += len(exc.attempts)
            self._record_switches(exc.switches)
            self._refresh_summary(force=True)
            if isinstance(exc, NoRecovery) or isinstance(exc, Stopped):
                self._finish(FAILED, f"{exc.kind}: {exc.message}")
                return
            self._failed_runs += 1
            costly = [a for a in exc.attempts if a.outcome != "success" and a.category not in PACING_CATEGORIES]
            if costly or isinstance(exc, GaveUp):   # work was lost: an error
                s.consecutive_failures += 1
                last = costly[-1] if costly else None
                category = last.category if last else (exc.last_failure.category.value if exc.last_failure else None)
                message = exc.message if isinstance(exc, GaveUp) or not costly else \
                    "no sample from this attempt: " + "; ".join(_attempt_text(a) for a in costly)
                s.add_error({"error": message, "kind": exc.kind, "topic": slot.topic.label, "category": category,
                             "attempts": [_attempt_text(a) for a in costly]})
            content_failures = [a for a in exc.attempts if a.category in CONTENT_CATEGORIES]
            if isinstance(exc, GaveUp) or content_failures:  # the request, not the provider, is failing
                self._topic_failed(slot, exc.message if isinstance(exc, GaveUp) else content_failures[-1].message)
            recovery = exc.retry_after if exc.retry_after is not None else 1.0
            wait = recovery
            if wait <= 0 and self._failed_runs:  # failing with nothing to wait for: back off a little
                wait = min(0.25 * self._failed_runs, 5.0)
            wait = min(max(wait, 0.0), self.settings.max_wait_seconds)
            held = exc.blocked
            if not isinstance(exc, GaveUp) and held and all(b["why"] in HOLDS for b in held):
                # every candidate is cooling down or out of budget: a wait, with what held each one
                # (not while a first request to one is pending or one is free: the batch is moving)
                reason = f"every candidate is cooling down or out of budget: {describe(held)}"
                self._record_wait(reason, max(recovery, wait), held, "all_cooling")
            else:
                reason = exc.message
            if wait > 0 and self._storage_problem is None:
                s.waiting_until = utc_in(wait)
                s.waiting_reason = reason
            self._save()
        if wait > 0:
            self._sleep(wait)

    def _on_rejected(self, slot: Slot, result: GenerationResult, verdict: str) -> None:
        with self.lock:
            if self.stop_event.is_set():
                return
            s = self.state
            s.rejected_total += 1
            s.consecutive_failures += 1
            s.attempts_total += len(result.attempts)
            s.add_error({"error": f"rejected by quality checks: {verdict}", "kind": "rejected",
                         "topic": slot.topic.label, "category": "invalid_output"})
            self._topic_failed(slot, verdict)
            self._save()

    def _topic_failed(self, slot: Slot, reason: str) -> None:
        label = slot.topic.label
        count = self._topic_failures.get(label, 0) + 1
        self._topic_failures[label] = count
        if count >= self.settings.topic_skip_after:
            self._topic_failures.pop(label, None)
            self._skipped_until[label] = time.monotonic() + self.settings.topic_skip_seconds
            push_bounded(self.state.skipped_topics, {"topic": label, "reason": reason, "failures": count,
                                                     "until": utc_in(self.settings.topic_skip_seconds)})

    def _skipped_topics(self) -> set[str]:
        now = time.monotonic()
        with self.lock:
            return {label for label, until in self._skipped_until.items() if until > now}

    def _wait_for_topics(self) -> None:
        now = time.monotonic()
        with self.lock:
            pending = [u for u in self._skipped_until.values() if u > now]
            wait = min(min(pending) - now if pending else 1.0, self.settings.max_wait_seconds)
            self.state.waiting_until = utc_in(wait)
            self.state.waiting_reason = "every topic in the rotation is skipped after repeated failures"
            self._record_wait(self.state.waiting_reason, wait, [], "topics_skipped")
            self._save()
        self._sleep(wait)


def _attempt_text(attempt: AttemptRecord) -> str:
    return f"{attempt.provider}/{attempt.model} {attempt.category}: {attempt.message}"
