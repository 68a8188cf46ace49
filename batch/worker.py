"""One running batch: worker threads that claim slots, generate, and store exactly `total` samples.

A slot is claimed only while `stored + in_flight < total`, and a sample is stored only under the
batch lock after checking the batch is neither stopped nor complete, so a batch never overshoots
and nothing is stored after a stop. Every claim is released exactly once, with its rotation slot
and its quality reservation unless the sample was stored. Waiting (every model cooling or out of
budget) is visible in the state; only a failure nothing can recover from ends the batch with an error.

What people watching see is what happened (`batch.bookkeeping`: waits apart from errors, the
rate, the ETA); failing writes pause the batch until a small write works (`batch.storage_pause`).

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
from typing import Any, Callable

from batch.bookkeeping import Bookkeeping
from batch.rotation import Rotation, Slot
from batch.storage_pause import StoragePause
from config.providers import BatchConfig
from fallback.router import RoutingError
from generation.engine import GenerationEngine, GenerationRequest, GenerationResult
from generation.requests import sample_record
from state import COMPLETED, STOPPED, BatchState, utc_now
from storage.batches import BatchRepository
from storage.errors import DuplicateQuestion, NotLeaseHolder, WriteFailed
from storage.store import Store

log = logging.getLogger("batch")
@dataclass
class Claim:
    """One claimed slot: counted in `in_flight` until released (once), with what it holds."""

    number: int
    slot: Slot | None = None
    record_id: str | None = None     # a question reserved in the quality index
    released: bool = False


class BatchRun(StoragePause, Bookkeeping):
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

    def _sleep(self, seconds: float) -> None:
        self.stop_event.wait(seconds)


def _pair(entry: str) -> tuple[str, str]:
    """"provider/model" (as saved with the batch) -> (provider, model)."""
    provider, _, model = entry.partition("/")
    return provider, model


