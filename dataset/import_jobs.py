"""Background imports: a large JSON Lines import runs as a job, chunk by chunk, with progress.

    jobs = ImportJobs(store, quality, chunk_rows=1000)
    jobs.submit(content, skip_invalid=False) -> the job's report (status "queued")
    jobs.get(job_id) / jobs.list() -> reports;  jobs.cancel(job_id) -> report (JobFinished if it had ended)
    jobs.stop(timeout) -> cancel everything and wait for the worker (the server is shutting down)

One worker thread, started with the first job, runs jobs one after another. A job

1. checks every line (`check_line`). A bad line fails the job before anything is stored, every bad
   line listed (the first `LISTED`) with its number and field, as the synchronous import refuses
   the whole content; with `skip_invalid` bad lines are listed as rejected and skipped instead;
2. stores the records in chunks of `chunk_rows`, each one transaction through `Importer`
   (duplicates skipped, the quality gate applied once per row);
3. looks for a cancellation between chunks (and every `chunk_rows` lines while checking), so a
   cancel or a shutdown takes effect within one chunk: about a second. Chunks already stored stay.

Reports (`report()`): status queued / running / completed / failed / cancelled, the phase, lines
checked and done of the total, imported, duplicates, rejected (with reasons), errors, timings.
Jobs live in memory: the last `KEEP` finished ones are kept, a restart forgets them all.
"""
from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from typing import Any

from dataset import memory
from dataset.importing import LISTED, Importer, LineError, check_line, split_lines
from quality.service import QualityService
from state import utc_now
from storage.errors import WriteFailed
from storage.store import Store

log = logging.getLogger("import")

QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED = "queued", "running", "completed", "failed", "cancelled"
FINISHED = (COMPLETED, FAILED, CANCELLED)
KEEP = 50


class JobFinished(Exception):
    """The job has already ended (its status says how); there is nothing to cancel."""


class ShuttingDown(Exception):
    """The runner has been stopped: no new job is accepted."""


class ImportJob:
    """One import's state; changed by the worker, read through `report()` under the runner's lock."""

    def __init__(self, content: str, skip_invalid: bool, chunk_rows: int):
        self.id = f"import_{int(time.time())}_{os.urandom(4).hex()}"
        self.content: str | None = content
        self.skip_invalid = skip_invalid
        self.chunk_rows = chunk_rows
        self.status = QUEUED
        self.phase = QUEUED
        self.lines_total = 0
        self.records_total = 0
        self.lines_checked = 0
        self.lines_done = 0
        self.errors: list[dict[str, Any]] = []
        self.error_count = 0
        self.importer: Importer | None = None
        self.cancel = threading.Event()
        self.stop_reason = "cancelled on request"
        self.message = "waiting for the import before it to finish"
        self.created_at = utc_now()
        self.started_at: str | None = None
        self.finished_at: str | None = None
        self._started = 0.0
        self._elapsed: float | None = None

    def error(self, line: int | None, text: str) -> None:
        self.error_count += 1
        if len(self.errors) < LISTED:
            self.errors.append({"line": line, "error": text})

    def report(self) -> dict[str, Any]:
        tally = self.importer.tally if self.importer is not None else None
        elapsed = self._elapsed if self._elapsed is not None else (
            time.monotonic() - self._started if self._started else 0.0)
        handled = (tally.imported + tally.duplicate_count + tally.duplicate_question_count) if tally else 0
        return {
            "id": self.id, "status": self.status, "phase": self.phase, "message": self.message,
            "lines_total": self.lines_total, "records_total": self.records_total,
            "lines_checked": self.lines_checked, "lines_done": self.lines_done,
            "imported": tally.imported if tally else 0,
            "duplicates": tally.duplicate_count if tally else 0,
            "duplicate_ids": list(tally.duplicates) if tally else [],
            "duplicate_questions": tally.duplicate_question_count if tally else 0,
            "rejected": tally.rejected_count if tally else 0,
            "rejections": [dict(r) for r in tally.rejected] if tally else [],
            "flagged_for_review": tally.flagged_for_review if tally else 0,
            "errors": [dict(e) for e in self.errors], "error_count": self.error_count,
            "skip_invalid": self.skip_invalid, "chunk_rows": self.chunk_rows,
            "cancel_requested": self.cancel.is_set() and self.status not in FINISHED,
            "created_at": self.created_at, "started_at": self.started_at, "finished_at": self.finished_at,
            "elapsed_seconds": round(elapsed, 3),
            "rows_per_second": round(handled / elapsed, 1) if elapsed > 0 and handled else None,
        }


class ImportJobs:
    """The background import runner of one store (see the module's description)."""

    def __init__(self, store: Store, quality: QualityService, *, chunk_rows: int = 1000, keep: int = KEEP):
        self.store = store
        self.quality = quality
        self.chunk_rows = chunk_rows
        self.keep = keep
        self._lock = threading.Lock()
        self._jobs: dict[str, ImportJob] = {}
        self._queue: queue.Queue[ImportJob | None] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._stopping = False

    # -- the interface ---------------------------------------------------------------------

    def submit(self, content: str, *, skip_invalid: bool = False) -> dict[str, Any]:
        job = ImportJob(content, skip_invalid, self.chunk_rows)
        with self._lock:
            if self._stopping:
                raise ShuttingDown("the server is shutting down; no new import is accepted")
            self._jobs[job.id] = job
            self._prune()
            if self._worker is None:
                self._worker = threading.Thread(target=self._run, name="import-jobs", daemon=True)
                self._worker.start()
            self._queue.put(job)
            return job.report()

    def get(self, job_id: str) -> dict[str, Any] | None:
        with self._lock:
            job = self._jobs.get(job_id)
            return job.report() if job is not None else None

    def list(self) -> list[dict[str, Any]]:
        """Every job kept, newest first."""
        with self._lock:
            return [job.report() for job in reversed(list(self._jobs.values()))]

    def cancel(self, job_id: str) -> dict[str, Any] | None:
        """Ask a job to stop (a queued one never starts; a running one stops after its chunk in
        hand). None if unknown; `JobFinished` if it has already ended."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return None
            if job.status in FINISHED:
                raise JobFinished(f"import {job_id} has already {job.status}")
            job.cancel.set()
            if job.status == QUEUED:
                self._finish(job, CANCELLED, "cancelled before it started; nothing was imported")
            return job.report()

    def running(self) -> bool:
        with self._lock:
            return any(job.status in (QUEUED, RUNNING) for job in self._jobs.values())

    def stop(self, timeout: float = 5.0) -> None:
        """Accept no new job, cancel every queued and running one, and wait up to `timeout`
        seconds for the worker (a running job stops after its chunk in hand)."""
        with self._lock:
            self._stopping = True
            for job in self._jobs.values():
                if job.status not in FINISHED:
                    job.stop_reason = "stopped: the server is shutting down"
                    job.cancel.set()
                    if job.status == QUEUED:
                        self._finish(job, CANCELLED, "stopped before it started (the server shut down); "
                                                     "nothing was imported")
            worker = self._worker
        self._queue.put(None)
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout)
            if worker.is_alive():
                log.warning("import jobs: the worker did not stop within %.1fs", timeout)

    close = stop

    # -- the worker ------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            with self._lock:
                if job.status != QUEUED:
                    continue   # cancelled while queued
                job.status = RUNNING
                job.started_at = utc_now()
                job._started = time.monotonic()
                job.importer = Importer(self.store, self.quality, listed=LISTED)
            try:
                self._import(job)
            except WriteFailed as exc:
                with self._lock:
                    job.error(None, f"storage: {exc}")
                    self._finish(job, FAILED, self._partial(job, f"storage failed ({exc.reason})"))
                log.error("import %s: storage failed after %d line(s): %s", job.id, job.lines_done, exc)
            except Exception as exc:   # a bug: report it in the job, keep the worker alive
                log.exception("import %s failed", job.id)
                with self._lock:
                    job.error(None, f"internal error ({type(exc).__name__}); see the server log")
                    self._finish(job, FAILED, self._partial(job, "an internal error stopped it"))
            finally:
                with self._lock:
                    job.content = None   # the text can be large: keep only the report
                memory.release()         # and give back the pages its lines and records took

    def _import(self, job: ImportJob) -> None:
        assert job.content is not None and job.importer is not None
        lines = split_lines(job.content)
        with self._lock:
            job.phase = "checking"
            job.lines_total = len(lines)
            job.message = f"checking {len(lines)} line(s)"
        invalid: set[int] = set()
        records = 0
        for number, line in enumerate(lines, 1):
            if number % self.chunk_rows == 0:
                with self._lock:
                    job.lines_checked = number
                if job.cancel.is_set():
                    return self._cancelled(job)
            if not line.strip():
                continue
            records += 1
            try:
                check_line(number, line)
            except LineError as exc:
                invalid.add(number)
                with self._lock:
                    if job.skip_invalid:
                        job.importer.tally.reject(number, exc.sample_id, exc.problem)
                    else:
                        job.error(number, str(exc))
        with self._lock:
            job.lines_checked = len(lines)
            job.records_total = records
            if records == 0:
                job.error(None, "content has no records")
            if job.errors:
                self._finish(job, FAILED, f"{job.error_count} line(s) cannot be imported; nothing was imported "
                                          "(fix them, or send ?skip_invalid=true to import the rest)"
                             if records else "content has no records")
                return
            job.phase = "importing"
            job.message = f"importing {records - len(invalid)} record(s)"
        chunk: list[tuple[int, dict[str, Any]]] = []
        for number, line in enumerate(lines, 1):
            if number in invalid or not line.strip():
                continue
            chunk.append((number, json.loads(line)))   # checked above; the store checks it again as it writes
            if len(chunk) >= self.chunk_rows:
                if not self._store(job, chunk, number):
                    return
                chunk = []
        if chunk and not self._store(job, chunk, len(lines)):
            return
        with self._lock:
            job.lines_done = len(lines)
            self._finish(job, COMPLETED, job.importer.tally.message())
        log.info("import %s: %s (%d line(s) in %.1fs)", job.id, job.message, len(lines), job._elapsed or 0)

    def _store(self, job: ImportJob, chunk: list[tuple[int, dict[str, Any]]], last_line: int) -> bool:
        """One chunk, then the progress; False if the job must stop (cancelled)."""
        if job.cancel.is_set():
            self._cancelled(job)
            return False
        assert job.importer is not None
        with self._lock:
            importer = job.importer
        importer.store_chunk(chunk)
        with self._lock:
            job.lines_done = last_line
            job.message = f"{importer.tally.message()} so far; {last_line} of {job.lines_total} line(s) done"
        return True

    def _cancelled(self, job: ImportJob) -> None:
        with self._lock:
            self._finish(job, CANCELLED, self._partial(job, job.stop_reason))
        log.info("import %s: %s", job.id, job.message)

    @staticmethod
    def _partial(job: ImportJob, why: str) -> str:
        tally = job.importer.tally if job.importer is not None else None
        kept = f"{tally.imported} sample(s) imported before it stopped are kept" if tally else "nothing was imported"
        return f"{why} after {job.lines_done} of {job.lines_total} line(s); {kept}"

    def _finish(self, job: ImportJob, status: str, message: str) -> None:
        """Under the lock."""
        job.status = status
        job.phase = "done"
        job.message = message
        job.finished_at = utc_now()
        job._elapsed = time.monotonic() - job._started if job._started else 0.0
        if not job._started:
            job.content = None   # it never ran (the worker skips it): drop the text now

    def _prune(self) -> None:
        """Under the lock: forget the oldest finished jobs beyond `keep`."""
        finished = [job_id for job_id, job in self._jobs.items() if job.status in FINISHED]
        for job_id in finished[:max(0, len(finished) - self.keep)]:
            del self._jobs[job_id]
