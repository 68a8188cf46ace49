"""The dataset's quality gate, shared by generation, batches, import and edits.

One `DuplicateIndex` for the whole dataset, built from the store in the background at start-up
and kept current by store events. `admit` assesses a record and, if it passes, reserves its
question in the index in the same step (under one lock), so two samples with the same question
can never both get in; a reservation whose sample is then not stored is released with `forget`.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from quality.checks import FLAGS, REJECT, QualityReport, assess
from quality.duplicates import DuplicateIndex
from storage.errors import StoreError
from storage.store import Change, Store

READY_TIMEOUT = 300.0
log = logging.getLogger("quality")
REJECT_CODES = tuple(code for code, spec in FLAGS.items() if spec.severity == REJECT)


@dataclass(frozen=True)
class Rejection:
    codes: tuple[str, ...]
    detail: str

    @property
    def message(self) -> str:
        return f"quality: {','.join(self.codes)} | {self.detail}"


def annotate(record: dict[str, Any], report: QualityReport) -> dict[str, Any]:
    """The record with its quality score, flag codes and full report."""
    return {**record, "quality_score": report.score, "quality_flags": report.codes,
            "duplicate_of": report.duplicate_of, "quality": report.to_dict()}


def checks_applied() -> list[str]:
    """One line per check, for the dataset card."""
    return [f"{code} ({spec.severity}): {spec.meaning}" for code, spec in FLAGS.items()]


class QualityService:
    def __init__(self, store: Store):
        self.store = store
        self.index = DuplicateIndex()
        self._lock = threading.Lock()
        self._events_lock = threading.Lock()
        self._buffer: list[Change] | None = []     # events that arrive while the index is built
        self._ready = threading.Event()
        self.rejections: dict[str, int] = {}       # reject codes seen since start-up (all callers)
        self._reserved: dict[str, str] = {}        # id -> question admitted and indexed, not yet stored
        store.on_change(self._on_change)

    # -- the index -------------------------------------------------------------------------

    def build(self) -> None:
        """Index every stored question, then apply the changes that arrived meanwhile. The index
        is declared ready whatever happens: a question that cannot be indexed is logged and
        skipped, and if reading the store fails, what was read is kept (generation must not wait
        `READY_TIMEOUT` for an index that will never come)."""
        try:
            for sample_id, question in self.store.iter_questions():
                try:
                    self.index.add(sample_id, question)
                except Exception:   # one unusable row must not cost the whole index
                    log.exception("duplicate index: cannot index the question of sample %r; skipped", sample_id)
        except Exception:
            log.exception("duplicate index: reading the stored questions failed; the index holds what was read")
        finally:
            with self._events_lock:
                buffered, self._buffer = self._buffer or [], None
            for change in buffered:   # replaying is idempotent: add replaces, remove forgets
                try:
                    self._apply(change)
                except Exception:
                    log.exception("duplicate index: a change could not be applied")
            self._ready.set()

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> bool:
        return self._ready.wait(timeout)

    def _on_change(self, change: Change) -> None:
        with self._events_lock:
            if self._buffer is not None:
                self._buffer.append(change)
                return
        self._apply(change)

    def _apply(self, change: Change) -> None:
        for record in change.records:
            question = record.get("question") or ""
            if self._reserved.pop(record["id"], None) == question:
                continue   # admitted with this very question: indexed then
            self.index.add(record["id"], question)
        for sample_id in change.ids:
            self._reserved.pop(sample_id, None)
            self.index.remove(sample_id)

    # -- checks ----------------------------------------------------------------------------

    def assess(self, record: dict[str, Any]) -> tuple[dict[str, Any], QualityReport]:
        """Read-only: the annotated record and its report."""
        self.wait_ready()
        report = assess(record, self.index)
        return annotate(record, report), report

    def admit(self, record: dict[str, Any], *, strict: bool) -> tuple[dict[str, Any], Rejection | None]:
        """Assess and, unless rejected, reserve the question. `strict`: any reject-severity flag
        rejects (generated samples); otherwise only an exact duplicate does (people's own data).
        The question is fingerprinted once, outside the lock, for both the check and the reservation;
        when the sample is then stored, the index keeps the reservation instead of indexing it again."""
        self.wait_ready()
        question = record.get("question") or ""
        fingerprint = self.index.prepare(question) if question.strip() else None
        with self._lock:
            report = assess(record, self.index, fingerprint=fingerprint)
            blocking = [f for f in report.flags if f.severity == REJECT and (strict or f.code == "exact_duplicate")]
            if not blocking:
                self.index.add_prepared(record["id"], fingerprint or self.index.prepare(question))
                self._reserved[record["id"]] = question
        if blocking:
            codes = tuple(dict.fromkeys(f.code for f in blocking))
            with self._events_lock:
                for code in codes:
                    self.rejections[code] = self.rejections.get(code, 0) + 1
            return annotate(record, report), Rejection(codes, "; ".join(f"{f.code}: {f.detail}" for f in blocking))
        return annotate(record, report), None

    def forget(self, sample_id: str) -> None:
        """Release a reservation whose sample was not stored (or whose edit was not saved): the
        index goes back to what the store holds for that id."""
        self._reserved.pop(sample_id, None)
        try:
            stored = self.store.get(sample_id)
        except StoreError as exc:   # the database is away: a failed write changed nothing, so the
            # row is as it was; a new sample's question leaves the index (an unsaved edit's stored
            # question too, until the next start: the unique constraint still refuses exact copies)
            log.warning("releasing the question of %s without reading the store: %s", sample_id, exc)
            stored = None
        if stored is None:
            self.index.remove(sample_id)
        else:
            self.index.add(sample_id, stored.get("question") or "")
