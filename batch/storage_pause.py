"""A batch paused by failing writes: part of `BatchRun` (batch.worker).

A write that fails (`WriteFailed`: disk full, read-only file, PostgreSQL away...) pauses the
batch: no new provider call starts, the state says why (`waiting_reason`, an error entry), and
every `batch.storage_retry_seconds` one worker tries a small write; when it works the batch
carries on, its count, producers and cost taken again from its stored rows.
"""
from __future__ import annotations

import logging
import time

from batch.produced import recount_produced
from state import COMPLETED, utc_in
from storage.errors import StoreError, WriteFailed

log = logging.getLogger("batch")


class StoragePause:
    """Part of `BatchRun` (it uses the run's `state`, `lock`, `settings`, `store`, `repo`, `engine`,
    `stored`, `stop_event`, `publish`, `_finish`, `_save` and `_sleep`)."""

    _storage_problem: str | None   # set while writes fail: the batch is paused
    _next_probe: float             # when a worker next tries a small write, monotonic

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
            s.waiting_until = utc_in(max(0.0, self._next_probe - now))
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
                self.state.waiting_until = utc_in(interval)
                self.state.waiting_reason = f"storage: {problem}; paused, trying a small write every {interval:g}s"
            self.publish(self.state)
