"""One running batch: worker threads that claim slots, generate, and store exactly `total` samples.

A slot is claimed only while `stored + in_flight < total`, and a sample is stored only under the
batch lock after checking the batch is neither stopped nor complete, so a batch never overshoots
and nothing is stored after a stop. Every claim is released exactly once, with its rotation slot
and its quality reservation unless the sample was stored. Waiting (every model cooling or out of
budget) is visible in the state; only a failure nothing can recover from ends the batch with an error.

What people watching see is what happened: time spent waiting because every candidate was cooling
down or out of budget is a `waits` entry (when, until when, and what held every candidate), never
an error; a rate-limited attempt (429) is pacing, not lost work. `errors` holds the failures that
cost work: attempts that failed otherwise, rejected outputs, storage failures, the batch's end.
`rate_per_minute` counts the samples stored in the last minute (waits included) and `eta_seconds`
adds the rest of a current wait, which `eta_note` then explains.

A write that fails (`WriteFailed`: disk full, read-only file...) pauses the batch: no new provider
call starts, the state says why (`waiting_reason`, an error entry), and every
`batch.storage_retry_seconds` one worker tries a small write; when it works the batch carries on.

At process exit (`shutdown`, then `settle`) the workers are told to stop and waited for only while
they work with the database: one waiting on the engine (a provider call that may hang for a
minute, a routing wait) is abandoned at once. It is a daemon thread; whatever answer it gets later
is dropped and it ends without touching anything, so the batch stays `running`, as last saved, and
resumes at the next start with what the database holds.
"""
from __future__ import annotations

import copy
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from batch.produced import recount_produced
from batch.rotation import Rotation, Slot
from generation.engine import GenerationEngine, GenerationRequest, GenerationResult
from fallback.metrics import SwitchEvent
from fallback.router import AttemptRecord, Cancelled, GaveUp, NoRecovery, RoutingError, Stopped, describe
from generation.requests import sample_record
from config.providers import BatchConfig
from state import COMPLETED, FAILED, STOPPED, BatchState, push_bounded, utc_now
from storage.batches import BatchRepository
from storage.errors import DuplicateQuestion, NotLeaseHolder, StoreError, WriteFailed
from storage.store import Store

log = logging.getLogger("batch")
CONTENT_CATEGORIES = ("invalid_output", "bad_request")   # failures that say more about the topic than the model
PACING_CATEGORIES = ("rate_limit", "quota_exhausted")   # refusals that cost no work: a reason to wait
RATE_WINDOW_SECONDS = 60.0   # rate_per_minute counts the samples stored over the last minute...
RATE_MIN_SPAN_SECONDS = 10.0  # ...or since the start, but never extrapolates from less than this
HOLDS = ("cooling", "budget", "disabled")   # what keeps a candidate out (`Router.report`'s `why`) in a wait
WAIT_MERGE_SECONDS = 1.0     # a wait found this soon after the current one's end continues it


SKIP_LOG_SECONDS = 60   # budget/cooldown skips of the same model are logged once a minute


def _iso_in(seconds: float) -> str:
    return (datetime.now(timezone.utc) + timedelta(seconds=seconds)).isoformat()


@dataclass
class Claim:
    """One claimed slot: counted in `in_flight` until released (once), with what it holds."""

    number: int
    slot: Slot | None = None
    record_id: str | None = None     # a question reserved in the quality index
    released: bool = False


class BatchRun:
    def __init__(self, state: BatchState, *, engine: GenerationEngine, store: Store, repo: BatchRepository,
                 rotation: Rotation, settings: BatchConfig, publish: Callable[[BatchState], None],
                 quality: Any = None, simulated: bool = False, stored: int = 0):
        self.state = state
        self.engine = engine
        self.store = store
        self.repo = repo
        self.rotation = rotation
        self.settings = settings
        self.publish = publish
        self.quality = quality
        self.simulated = simulated
        self.lock = threading.RLock()
        self.stop_event = threading.Event()
        self.stored = stored
        self.in_flight = 0
        self.slot_counter = stored
        self._threads: list[threading.Thread] = []
        self._completions: deque[float] = deque()
        self._topic_failures: dict[str, int] = {}
        self._skipped_until: dict[str, float] = {}
        self._last_skip_logged: dict[tuple[str, str], float] = {}
        self._summary_at = 0.0
        self._started_mono = time.monotonic()
        self._storage_problem: str | None = None   # set while writes fail: the batch is paused
        self._next_probe = 0.0
        self._open_wait: dict[str, Any] | None = None   # the entry of `state.waits` still going on
        self._open_wait_until = 0.0                      # its expected end, monotonic
        self._failed_runs = 0                            # runs in a row that produced nothing
        # Which workers still run, which of them wait on the engine (touching no database), and
        # which of those a shutdown abandoned; `_activity` is notified when a worker ends or
        # enters the engine.
        self._activity = threading.Condition()
        self._working: set[threading.Thread] = set()
        self._in_engine: set[threading.Thread] = set()
        self._abandoned: set[threading.Thread] = set()
        self._silenced = False   # `abandon`: another server runs the batch now; write nothing more

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        with self.lock:
            if self.stored >= self.state.total:
                self._finish(COMPLETED)
                return
        for number in range(max(1, min(self.settings.max_in_flight, self.state.total - self.stored))):
            thread = threading.Thread(target=self._work, name=f"{self.state.batch_id}-{number}", daemon=True)
            self._threads.append(thread)
            with self._activity:
                self._working.add(thread)
            thread.start()

    def alive(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def stop(self) -> bool:
        """Stop at once and record the batch as stopped; False if it had already ended."""
        with self.lock:
            if not self.state.running:
                return False
            self.stop_event.set()
            self._finish(STOPPED)
            return True

    def shutdown(self) -> None:
        """The process is going away: stop working but leave the batch `running` to resume later.
        Returns at once; `settle` waits for the workers."""
        self.stop_event.set()

    def abandon(self) -> None:
        """Another server runs this batch now (its lease moved): stop at once and never write its
        state again. Takes no lock, so a worker stuck in a database call cannot hold it up."""
        self._silenced = True
        self.stop_event.set()

    def snapshot(self) -> dict[str, Any]:
        """The state as a plain dict, its rate and ETA brought up to now."""
        with self.lock:
            if self.state.running:
                self._update_rate()
            return self.state.to_dict()

    def history_record(self) -> dict[str, Any]:
        with self.lock:
            return copy.deepcopy(self.state.history_record())

    def settle(self, timeout: float) -> int:
        """After `shutdown`: wait, at most `timeout` seconds, until every worker has ended or waits
        on the engine, and abandon those that wait there (they drop whatever answer comes and end
        without touching the database). Returns how many workers are left running."""
        deadline = time.monotonic() + timeout
        with self._activity:
            while self._working - self._in_engine:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._activity.wait(left)
            self._abandoned |= self._in_engine
            return len(self._working)

    def _finish(self, status: str, error: str | None = None) -> None:
        """Under the lock: final status, persisted and published."""
        self.stop_event.set()
        state = self.state
        state.status, state.running = status, False
        state.completed_at = utc_now()
        state.in_flight, state.waiting_until, state.waiting_reason = 0, None, None
        self._close_wait()
        state.eta_seconds = 0.0 if status == COMPLETED else None
        state.eta_note = None
        if error:
            state.final_error = error
            state.add_error({"error": error, "fatal": True})
        self._save()

    def _save(self) -> None:
        """Persist and publish the state. If the write fails the state is still published (and
        kept in memory, where the status endpoints read a live batch) and the batch pauses."""
        if self._silenced:
            return
        with self.lock:
            try:
                self.repo.save(self.state)
            except WriteFailed as exc:
                self._storage_failed(exc)
            self.publish(self.state)

    def _log_attempts(self, number: int, attempts: list[dict[str, Any]], sample_id: str | None = None) -> None:
        if self._silenced:
            return
        try:
            self.repo.log_attempts(self.state.batch_id, number, attempts, sample_id)
        except WriteFailed as exc:
            with self.lock:
                self._storage_failed(exc)
                self.publish(self.state)

    # -- the worker loop -------------------------------------------------------------------

    def _claim(self) -> Claim | None:
        with self.lock:
            if self.stop_event.is_set() or self.stored + self.in_flight >= self.state.total:
                return None
            self.in_flight += 1
            self.slot_counter += 1
            self.state.in_flight = self.in_flight
            return Claim(self.slot_counter)

    def _release(self, claim: Claim, *, stored: bool = False) -> None:
        """End a claim (once): it no longer counts in flight. Unless its sample was stored, its
        rotation slot and its reserved question are given back."""
        with self.lock:
            if claim.released:
                return
            claim.released = True
            self.in_flight -= 1
            self.state.in_flight = self.in_flight
        if stored:
            return
        if claim.slot is not None:
            self.rotation.release(claim.slot)
        if claim.record_id is not None and self.quality is not None:
            try:
                self.quality.forget(claim.record_id)
            except Exception:  # noqa: BLE001 - releasing must not fail the slot; say so
                log.exception("batch %s: could not release the reservation of %s", self.state.batch_id,
                              claim.record_id)

    def _work(self) -> None:
        try:
            self._work_loop()
        finally:
            with self._activity:
                self._working.discard(threading.current_thread())
                self._activity.notify_all()

    def _work_loop(self) -> None:
        while not self.stop_event.is_set():
            if self._paused():
                self._wait_for_storage()
                continue
            claim = self._claim()
            if claim is None:
                return
            claim.slot = self.rotation.next(exclude=self._skipped_topics())
            if claim.slot is None:
                self._release(claim)
                self._wait_for_topics()
                continue
            try:
                self._run_slot(claim)
            except Exception:  # a bug here must not kill the batch silently
                log.exception("batch %s: slot %s failed unexpectedly", self.state.batch_id, claim.number)
                self._release(claim)
                self._sleep(1.0)

    def _request(self, slot: Slot) -> GenerationRequest:
        s = self.state
        models = tuple(_pair(entry) for entry in s.requested_models) if s.requested_models else None
        return GenerationRequest(slot.topic, slot.difficulty, slot.sample_type, s.requested_provider,
                                 s.requested_model, s.reasoning_instruction, models, s.strategy)

    def _run_slot(self, claim: Claim) -> None:
        slot = claim.slot
        assert slot is not None
        with self.lock:
            self.state.current_sample = slot.topic.label
        try:
            outcome = self._generate(slot)
        except WriteFailed as exc:   # PostgreSQL away: the engine's shared state cannot be reached
            self._release(claim)
            with self.lock:
                self._storage_failed(exc)
                self._save()
            return
        if outcome is None:   # abandoned by a shutdown: the answer is dropped, nothing is written
            self._release(claim)
            return
        if isinstance(outcome, RoutingError):
            exc = outcome
            self._release(claim)
            self._log_attempts(claim.number, [a.to_dict() for a in exc.attempts])
            self._on_failure(slot, exc)
            return
        result = outcome
        record = sample_record(result, batch_id=self.state.batch_id, simulated=self.simulated)
        if self.quality is not None:
            record, rejection = self.quality.admit(record, strict=True)
            if rejection is not None:  # as invalid output: the slot is tried again
                self._release(claim)
                last = result.attempts[-1].to_dict()
                self._log_attempts(claim.number, [
                    *[a.to_dict() for a in result.attempts[:-1]],
                    {**last, "outcome": "rejected", "category": "invalid_output", "message": rejection.message}])
                self._on_rejected(slot, result, rejection.detail)
                return
            claim.record_id = record["id"]
        self._store(claim, result, record)

    def _generate(self, slot: Slot) -> GenerationResult | RoutingError | None:
        """The engine's sample, or the RoutingError it raised; None when a shutdown abandoned this
        worker while it waited on the engine (see `settle`)."""
        me = threading.current_thread()
        with self._activity:
            self._in_engine.add(me)
            self._activity.notify_all()
        outcome: GenerationResult | RoutingError
        try:
            outcome = self.engine.generate(self._request(slot), cancel=self.stop_event,
                                           pace_wait=self.settings.pace_wait_seconds)
        except RoutingError as exc:
            outcome = exc
        finally:
            with self._activity:
                self._in_engine.discard(me)
                abandoned = me in self._abandoned
        return None if abandoned else outcome

    def _store(self, claim: Claim, result: GenerationResult, record: dict[str, Any]) -> None:
        slot = claim.slot
        assert slot is not None
        duplicate: DuplicateQuestion | None = None
        with self.lock:
            if self.stop_event.is_set() or self.stored >= self.state.total:
                self._release(claim)
                return  # stopped or complete meanwhile: the result is discarded
            try:
                self.store.add(record)
            except WriteFailed as exc:   # nothing stored: the sample is dropped, the batch pauses
                self._release(claim)
                self._storage_failed(exc)
                self._save()
                return
            except NotLeaseHolder as exc:   # another server took the batch over: nothing more from here
                self._release(claim)
                log.warning("batch %s: %s; this server stops working on it", self.state.batch_id, exc)
                self.abandon()
                return
            except DuplicateQuestion as exc:   # the unique question key: stored meanwhile (by another server)
                self._release(claim)
                duplicate = exc
            else:
                self._release(claim, stored=True)
                self.stored += 1
                self._record_success(slot, result)
                self._storage_recovered()   # (after: a recount from the rows includes this sample)
                # under the lock, as the sample was stored: a completed batch's log holds every success
                self._log_attempts(claim.number, [a.to_dict() for a in result.attempts], record["id"])
                if self.stored >= self.state.total:
                    self._finish(COMPLETED)
                else:
                    self._save()
                return
        if duplicate is not None:   # as a rejection by the quality gate: the slot is tried again
            detail = f"exact_duplicate: same question as {duplicate.duplicate_of!r}"
            last = result.attempts[-1].to_dict()
            self._log_attempts(claim.number, [
                *[a.to_dict() for a in result.attempts[:-1]],
                {**last, "outcome": "rejected", "category": "invalid_output",
                 "message": f"quality: exact_duplicate | {detail}"}])
            self._on_rejected(slot, result, detail)

    # -- storage failures ------------------------------------------------------------------

    def _paused(self) -> bool:
        with self.lock:
            return self._storage_problem is not None

    def _storage_failed(self, exc: WriteFailed) -> None:
        """Under the lock: writes fail, so the batch pauses (no new provider call) until a small
        write works. The first failure of an outage is an error entry; the reason stays in
        `waiting_reason` while it lasts."""
        now = time.monotonic()
        interval = self.settings.storage_retry_seconds
        s = self.state
        if self._storage_problem is None:
            log.error("batch %s: %s; no new generation until writes work again (checked every %gs)",
                      s.batch_id, exc, interval)
            s.add_error({"error": f"storage: {exc}", "kind": "storage", "category": "storage"})
            self._next_probe = now + interval
        self._storage_problem = str(exc)
        if s.running:
            s.waiting_until = _iso_in(max(0.0, self._next_probe - now))
            s.waiting_reason = f"storage: {exc}; paused, trying a small write every {interval:g}s"

    def _storage_recovered(self) -> None:
        """Under the lock: a write worked, the batch carries on. Its count, producers and cost are
        taken again from the stored rows, as when a batch resumes: a write whose answer was lost
        with the connection (PostgreSQL away mid-commit) may have been stored after all."""
        if self._storage_problem is None:
            return
        log.warning("batch %s: writes work again; generation resumes", self.state.batch_id)
        self._storage_problem = None
        if (self.state.waiting_reason or "").startswith("storage:"):
            self.state.waiting_until = self.state.waiting_reason = None
        try:
            stored = self.repo.stored_samples(self.state.batch_id)
        except StoreError as exc:   # away again: counted at the next recovery
            log.warning("batch %s: could not count its stored samples: %s", self.state.batch_id, exc)
            return
        if stored > self.stored:
            log.warning("batch %s: %d sample(s) whose write seemed to fail were stored after all",
                        self.state.batch_id, stored - self.stored)
            self.stored = stored
            self.state.samples_generated = stored
            self.state.progress = int(100 * stored / self.state.total) if self.state.total else 100
            try:
                recount_produced(self.state, self.store, self.engine.config)
            except StoreError as exc:   # the count stands; the producers and cost are one sample short
                log.warning("batch %s: could not recount its producers: %s", self.state.batch_id, exc)

    def _wait_for_storage(self) -> None:
        """While paused: one worker at a time, every `storage_retry_seconds`, tries a small write."""
        interval = self.settings.storage_retry_seconds
        with self.lock:
            now = time.monotonic()
            if self._storage_problem is None:
                return
            probe = now >= self._next_probe
            wait = 0.0 if probe else self._next_probe - now
            if probe:
                self._next_probe = now + interval
        if not probe:
            self._sleep(min(wait, interval))
            return
        problem = self.store.write_problem()
        with self.lock:
            if self.stop_event.is_set():
                return
            if problem is None:
                self._storage_recovered()
                if self.stored >= self.state.total:
                    self._finish(COMPLETED)
                else:
                    self._save()
                return
            self._storage_problem = problem
            if self.state.running:
                self.state.waiting_until = _iso_in(interval)
                self.state.waiting_reason = f"storage: {problem}; paused, trying a small write every {interval:g}s"
            self.publish(self.state)

    # -- bookkeeping -----------------------------------------------------------------------

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
            current.update(until=_iso_in(self._open_wait_until - now), reason=reason, blocked=blocked)
            current["checks"] += 1
        else:
            self._open_wait_until = until
            self._open_wait = {"from": utc_now(), "until": _iso_in(seconds), "reason": reason, "kind": kind,
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
                s.waiting_until = _iso_in(wait)
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
                                                     "until": _iso_in(self.settings.topic_skip_seconds)})

    def _skipped_topics(self) -> set[str]:
        now = time.monotonic()
        with self.lock:
            return {label for label, until in self._skipped_until.items() if until > now}

    def _wait_for_topics(self) -> None:
        now = time.monotonic()
        with self.lock:
            pending = [u for u in self._skipped_until.values() if u > now]
            wait = min(min(pending) - now if pending else 1.0, self.settings.max_wait_seconds)
            self.state.waiting_until = _iso_in(wait)
            self.state.waiting_reason = "every topic in the rotation is skipped after repeated failures"
            self._record_wait(self.state.waiting_reason, wait, [], "topics_skipped")
            self._save()
        self._sleep(wait)

    def _sleep(self, seconds: float) -> None:
        self.stop_event.wait(seconds)


def _pair(entry: str) -> tuple[str, str]:
    """"provider/model" (as saved with the batch) -> (provider, model)."""
    provider, _, model = entry.partition("/")
    return provider, model


def _attempt_text(attempt: AttemptRecord) -> str:
    return f"{attempt.provider}/{attempt.model} {attempt.category}: {attempt.message}"
