"""Importing samples from JSON Lines: each line checked as the stored record it will become.

A line is a JSON object with the seven required fields (id, question, answer, topic, difficulty,
case_citation, reasoning) and any others; `check_line` parses it and applies the stored sample's
rules (`storage.records.check_record`: types, lengths, shapes, extra fields) and the catalogue's
labels (difficulty, sample type), raising `LineError` naming the line and the field.
"""
from __future__ import annotations

import json
from typing import Any

from generation.requests import RequestProblem, check_labels
from storage.errors import InvalidRecord
from storage.records import check_record
from storage.store import REQUIRED_IMPORT_FIELDS


class LineError(ValueError):
    """One line of an import cannot be imported; the message starts "line <n>: "."""

    def __init__(self, line: int, problem: str):
        self.line, self.problem = line, problem
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
    missing = [name for name in REQUIRED_IMPORT_FIELDS if name not in item]
    if missing:
        raise LineError(number, f"missing required field(s): {', '.join(missing)}")
    try:
        record = check_record(item)
        check_labels(record)
    except (InvalidRecord, RequestProblem) as exc:
        raise LineError(number, str(exc)) from None
    return record


def split_lines(content: str) -> list[str]:
    """The lines of JSON Lines text: split at line feeds only (a JSON string may hold U+2028 and
    other characters `str.splitlines` would split at), a carriage return before one dropped."""
    lines = content.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def parse_lines(content: str) -> list[dict[str, Any]]:
    """Every non-blank line as a record; `LineError` for the first bad line, `ValueError` if none."""
    records = [check_line(number, line) for number, line in enumerate(split_lines(content), 1) if line.strip()]
    if not records:
        raise ValueError("content has no records")
    return records
