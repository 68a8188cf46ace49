"""Importing samples from JSON Lines: each line checked as the stored record it will become,
then admitted by the quality gate and stored in chunks.

A line is a JSON object with the seven required fields (id, question, answer, topic, difficulty,
case_citation, reasoning) and any others; `check_line` parses it and applies the stored sample's
rules (`storage.records.check_record`: types, lengths, shapes, extra fields) and the catalogue's
labels (difficulty, sample type), raising `LineError` naming the line and the field.

`Importer.store_chunk(lines)` takes checked records and stores them in one transaction: ids
already stored (or earlier in the same import) are skipped as duplicates, each record passes the
quality gate once (an exact duplicate question is rejected, the rest are stored with their flags),
and a chunk whose ids another writer took meanwhile is re-sorted and retried. The synchronous
import is one chunk (all or nothing); a background job (`dataset.import_jobs`) is many.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterator

from generation.requests import RequestProblem, check_labels
from quality.service import REJECT_CODES, QualityService, Rejection
from storage.errors import DuplicateId, DuplicateQuestion, InvalidRecord
from storage.records import MAX_ID, check_record
from storage.store import REQUIRED_IMPORT_FIELDS, Store

LISTED = 100            # at most this many duplicate ids, rejections and errors are listed (all are counted)
RETRIES = 3             # a chunk another writer raced is re-sorted and tried again this often
REJECT_SET = frozenset(REJECT_CODES)


class LineError(ValueError):
    """One line of an import cannot be imported; the message starts "line <n>: ". `sample_id`:
    the line's id, when it has a usable one."""

    def __init__(self, line: int, problem: str, sample_id: str | None = None):
        self.line, self.problem, self.sample_id = line, problem, sample_id
        super().__init__(f"line {line}: {problem}")


def check_line(number: int, line: str) -> dict[str, Any]:
    """Line `number` (counted from 1) as a record ready to store; `LineError` if it is not one."""
    try:
        item = json.loads(line)
    except ValueError as exc:
        raise LineError(number, f"not valid JSON ({getattr(exc, 'msg', exc)})") from None
    except RecursionError:
        raise LineError(number, "JSON nested too deeply") from None
    if not isinstance(item, dict):
        raise LineError(number, "expected a JSON object")
    sample_id = item.get("id") if type(item.get("id")) is str and len(item["id"]) <= MAX_ID else None
    missing = [name for name in REQUIRED_IMPORT_FIELDS if name not in item]
    if missing:
        raise LineError(number, f"missing required field(s): {', '.join(missing)}", sample_id)
    try:
        record = check_record(item)
        check_labels(record)
    except (InvalidRecord, RequestProblem) as exc:
        raise LineError(number, str(exc), sample_id) from None
    return record


def split_lines(content: str) -> list[str]:
    """The lines of JSON Lines text: split at line feeds only (a JSON string may hold U+2028 and
    other characters `str.splitlines` would split at), a carriage return before one dropped."""
    lines = content.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def numbered_lines(content: str) -> Iterator[tuple[int, str]]:
    """(line number from 1, text) of every non-blank line."""
    for number, line in enumerate(split_lines(content), 1):
        if line.strip():
            yield number, line


def parse_lines(content: str) -> list[dict[str, Any]]:
    """Every non-blank line as a record; `LineError` for the first bad line, `ValueError` if none."""
    records = [check_line(number, line) for number, line in numbered_lines(content)]
    if not records:
        raise ValueError("content has no records")
    return records


@dataclass
class Tally:
    """What an import did so far: counts of everything, the first `listed` of each kind listed
    (None: all of them)."""

    listed: int | None = LISTED
    imported: int = 0
    flagged_for_review: int = 0
    duplicate_count: int = 0
    duplicates: list[str] = field(default_factory=list)                      # ids already stored or repeated
    duplicate_question_count: int = 0
    duplicate_questions: list[dict[str, Any]] = field(default_factory=list)  # {line, id, duplicate_of}
    rejected_count: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)            # {line, id?, reason}

    def duplicate(self, sample_id: str) -> None:
        self.duplicate_count += 1
        if self.listed is None or len(self.duplicates) < self.listed:
            self.duplicates.append(sample_id)

    def duplicate_question(self, line: int, sample_id: str, duplicate_of: str | None, reason: str) -> None:
        self.duplicate_question_count += 1
        if self.listed is None or len(self.duplicate_questions) < self.listed:
            self.duplicate_questions.append({"line": line, "id": sample_id, "duplicate_of": duplicate_of})
        self.reject(line, sample_id, reason)

    def reject(self, line: int, sample_id: str | None, reason: str) -> None:
        self.rejected_count += 1
        if self.listed is None or len(self.rejected) < self.listed:
            self.rejected.append({"line": line, "id": sample_id, "reason": reason})

    def message(self) -> str:
        skipped = self.duplicate_count + self.duplicate_question_count
        text = f"imported {self.imported} sample(s)" + (f", skipped {skipped} duplicate(s)" if skipped else "")
        invalid = self.rejected_count - self.duplicate_question_count
        return text + (f", skipped {invalid} invalid line(s)" if invalid else "")


class Importer:
    """Stores checked records in chunks, through the quality gate; `seen` spans the whole import."""

    def __init__(self, store: Store, quality: QualityService, *, listed: int | None = LISTED):
        self.store = store
        self.quality = quality
        self.seen: set[str] = set()
        self.tally = Tally(listed)

    def store_chunk(self, lines: list[tuple[int, dict[str, Any]]]) -> None:
        """Store (line number, checked record) pairs in one transaction; all or nothing. Raises
        what the store raises (`WriteFailed`...), with nothing of this chunk stored or reserved."""
        taken: dict[str, str | None] = {}   # id -> the sample whose question the unique key found stored
        attempt = 0
        while True:
            existing = self.store.exists([record["id"] for _, record in lines])
            added: set[str] = set()
            fresh: list[dict[str, Any]] = []
            duplicates: list[str] = []
            rejected: list[tuple[int, dict[str, Any], Any]] = []
            for number, record in lines:
                sample_id = record["id"]
                if sample_id in existing or sample_id in self.seen or sample_id in added:
                    duplicates.append(sample_id)
                    continue
                if sample_id in taken:
                    holder = taken[sample_id]
                    rejected.append((number, {**record, "duplicate_of": holder},
                                     Rejection(("exact_duplicate",), f"exact_duplicate: same question as {holder!r}")))
                    continue
                admitted, rejection = self.quality.admit(record, strict=False)
                if rejection is not None:
                    rejected.append((number, admitted, rejection))
                    continue
                added.add(sample_id)
                fresh.append(admitted)
            try:
                if fresh:
                    self.store.add_many(fresh)
            except BaseException as exc:   # nothing stored: release every reservation
                for record in fresh:
                    self.quality.forget(record["id"])
                if isinstance(exc, DuplicateId) and attempt < RETRIES:
                    attempt += 1
                    continue               # another writer took one of these ids meanwhile: sort again
                if isinstance(exc, DuplicateQuestion) and exc.conflicts:
                    taken.update(exc.conflicts)   # stored meanwhile (another server): skipped as duplicates
                    continue
                raise
            break
        self.seen |= added
        tally = self.tally
        for sample_id in duplicates:
            tally.duplicate(sample_id)
        for number, record, rejection in rejected:
            tally.duplicate_question(number, record["id"], record.get("duplicate_of"), rejection.detail)
        tally.imported += len(fresh)
        tally.flagged_for_review += sum(1 for r in fresh if not REJECT_SET.isdisjoint(r["quality_flags"]))
