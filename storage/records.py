"""The stored sample record: one definition of every field's type, length and shape.

Every way a sample comes in (generation, batches, `POST /api/add`, `PUT /api/sample/<id>`, the
JSON Lines import) ends in `Store.add`/`add_many`/`update`, which pass each record through
`check_record` before anything is written: nothing can store a record this module refuses. The
web layer builds its request models from the same field types (`web.validation`), and the import
checks each line with `check_record` itself, so every way in has the same limits.

    check_record(record) -> the record as it will be stored   (InvalidRecord naming every bad field)

Extra keys (an imported file's own columns) are kept, within bounds: at most `MAX_EXTRA_FIELDS`
of them, names of at most `MAX_EXTRA_NAME` characters, values plain JSON (objects, arrays, text,
finite numbers, true/false/null) nested at most `MAX_EXTRA_DEPTH` levels, `MAX_EXTRA_CHARS`
characters of JSON in all. `quality` (the gate's report, written by the quality service) is
checked the same way with a larger budget. Text anywhere must be valid Unicode (no lone surrogate
escapes: SQLite stores UTF-8) and, in the record's own text fields, free of NUL (PostgreSQL's text
cannot hold it; JSON escapes it in extra fields). The keys `seq` and `extra` name storage internals and are dropped.

Rows written by older versions may break these rules (a token count stored as text): reads
repair them on the way out (`storage.repairs`).
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Collection, Iterable

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError
from pydantic_core import PydanticCustomError

from storage.errors import InvalidRecord

MAX_ID = 200
MAX_TEXT = 50_000          # question, answer, reasoning, case_citation
MAX_TOPIC = 300
MAX_LABEL = 50             # difficulty, sample_type
MAX_PROVIDER = 100
MAX_MODEL = 200
MAX_BATCH_ID = 200
MAX_TIMESTAMP = 64
MAX_COUNT = 2**53 - 1      # token counts and attempts: exact in a browser's JSON numbers
MAX_LATENCY = 10**7        # seconds
MAX_FLAGS = 64
MAX_FLAG = 64
MAX_EXTRA_FIELDS = 50
MAX_EXTRA_NAME = 100
MAX_EXTRA_DEPTH = 16
MAX_EXTRA_CHARS = 64_000
MAX_QUALITY_CHARS = 2_000_000
MAX_JSON_INT = 2**63 - 1

STORAGE_KEYS = ("seq", "extra")   # never taken from a record
UNICODE_MESSAGE = "text must be valid Unicode (no lone surrogate escapes)"
NUL_MESSAGE = "text must not contain the NUL character (U+0000)"
_ISO = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?)?(?:Z|[+-]\d{2}:?\d{2})?")


def _valid_unicode(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise PydanticCustomError("string_unicode", UNICODE_MESSAGE) from None
    if "\x00" in text:   # PostgreSQL's text cannot hold it; refused on both backends, so datasets move freely
        raise PydanticCustomError("string_nul", NUL_MESSAGE)
    return text


def _not_blank(text: str) -> str:
    if not text.strip():
        raise PydanticCustomError("blank", "must not be empty or only spaces")
    return text


def _iso_timestamp(text: str) -> str:
    if _ISO.fullmatch(text) is None:
        raise PydanticCustomError("timestamp", "must be an ISO-8601 timestamp such as 2024-05-01T12:00:00+00:00")
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise PydanticCustomError("timestamp", "not a real date and time: {text}", {"text": text[:40]}) from None
    return text


def text(max_length: int, *, blank: bool = False) -> Any:
    """A text field of at most `max_length` characters; `blank`: may be empty."""
    checks = [AfterValidator(_valid_unicode)] if blank else [AfterValidator(_valid_unicode), AfterValidator(_not_blank)]
    return Annotated[StrictStr, Field(min_length=0 if blank else 1, max_length=max_length), *checks]


# The field types, shared with the web layer's request models.
SampleId = text(MAX_ID)
Question = text(MAX_TEXT)
Answer = text(MAX_TEXT)
Reasoning = text(MAX_TEXT)
Citation = text(MAX_TEXT, blank=True)
Topic = text(MAX_TOPIC)
Difficulty = text(MAX_LABEL)
SampleType = text(MAX_LABEL, blank=True)     # labels people may leave blank ("" = none)
Provider = text(MAX_PROVIDER, blank=True)
Model = text(MAX_MODEL, blank=True)
BatchId = text(MAX_BATCH_ID, blank=True)
Timestamp = Annotated[StrictStr, Field(max_length=MAX_TIMESTAMP), AfterValidator(_iso_timestamp)]
Count = Annotated[StrictInt, Field(ge=0, le=MAX_COUNT)]
Seconds = Annotated[float, Field(ge=0, le=MAX_LATENCY, strict=True, allow_inf_nan=False)]
Score = Annotated[float, Field(ge=0, le=1, strict=True, allow_inf_nan=False)]
FlagCode = Annotated[StrictStr, Field(min_length=1, max_length=MAX_FLAG), AfterValidator(_valid_unicode)]
Flags = Annotated[list[FlagCode], Field(max_length=MAX_FLAGS, strict=False)]   # a tuple is fine too


class SampleRecord(BaseModel):
    """A sample as stored. Keys not named here are the record's extra fields (checked separately)."""

    model_config = ConfigDict(extra="ignore", strict=True)

    id: SampleId
    question: Question
    answer: Answer
    reasoning: Reasoning
    case_citation: Citation
    topic: Topic
    difficulty: Difficulty
    sample_type: SampleType | None = None
    provider: Provider | None = None
    model: Model | None = None
    batch_id: BatchId | None = None
    created_at: Timestamp | None = None
    updated_at: Timestamp | None = None
    prompt_tokens: Count | None = None
    completion_tokens: Count | None = None
    latency: Seconds | None = None
    attempts: Count | None = None
    simulated: StrictBool | None = None
    quality_score: Score | None = None
    quality_flags: Flags | None = None
    duplicate_of: SampleId | None = None


FIELDS = tuple(SampleRecord.model_fields)
_NOT_EXTRA = frozenset((*FIELDS, *STORAGE_KEYS))   # (a set: tested for every key of every record written)


def problems_of(error: ValidationError) -> list[tuple[str, str]]:
    """(field, what is wrong) for each problem pydantic found."""
    found = []
    for item in error.errors(include_url=False):
        where = ".".join(str(part) for part in item["loc"]) or "record"
        message = {"string_unicode": UNICODE_MESSAGE, "string_nul": NUL_MESSAGE}.get(item["type"], item["msg"])
        found.append((where, message))
    return found


def check_record(record: Mapping[str, Any], *, only: Collection[str] | None = None) -> dict[str, Any]:
    """The record as it will be stored (`simulated` a bool, `quality_flags` a list, storage keys
    dropped), or `InvalidRecord` naming every field that breaks the rules. `only`: judge just these
    fields (an edit of a row an older version stored need not mend what it does not touch)."""
    if not isinstance(record, Mapping):
        raise InvalidRecord([("record", f"must be an object, not {type(record).__name__}")])
    problems: list[tuple[str, str]] = []
    try:
        SampleRecord.model_validate(record)
    except ValidationError as exc:
        problems += problems_of(exc)
    extras = {key: value for key, value in record.items() if key not in _NOT_EXTRA}
    problems += extra_problems(extras)
    if only is not None:
        extra_changed = any(key in extras for key in only)
        problems = [(field, message) for field, message in problems
                    if field.split(".")[0] in only or (field == "record" and extra_changed)]
    if problems:
        raise InvalidRecord(problems)
    out = {key: value for key, value in record.items() if key not in STORAGE_KEYS}
    out["simulated"] = bool(record.get("simulated"))
    flags = record.get("quality_flags")
    out["quality_flags"] = list(flags) if flags is not None else None
    return out


def extra_problems(extras: Mapping[Any, Any]) -> list[tuple[str, str]]:
    """What is wrong with a record's extra fields (and its `quality` report), per field."""
    problems: list[tuple[str, str]] = []
    if not extras:
        return problems
    others = [key for key in extras if key != "quality"]
    if len(others) > MAX_EXTRA_FIELDS:
        problems.append(("record", f"{len(others)} extra fields; at most {MAX_EXTRA_FIELDS} are kept"))
    size = 0
    for key, value in extras.items():
        if not isinstance(key, str):
            problems.append((repr(key)[:40], "field names must be text"))
            continue
        name = key if len(key) <= 60 else key[:57] + "..."
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            problems.append((name.encode("utf-8", "backslashreplace").decode(), f"field name: {UNICODE_MESSAGE}"))
            continue
        if len(key) > MAX_EXTRA_NAME:
            problems.append((name, f"field name longer than {MAX_EXTRA_NAME} characters"))
            continue
        problem = json_value_problem(value, MAX_EXTRA_DEPTH)
        if problem is None:
            try:
                text = json.dumps(value, ensure_ascii=False)
                text.encode("utf-8")
            except UnicodeEncodeError:
                problem = UNICODE_MESSAGE
        if problem is not None:
            problems.append((name, problem))
            continue
        if key == "quality":
            if value is not None and not isinstance(value, dict):
                problems.append((name, "must be an object (the quality report)"))
            elif len(text) > MAX_QUALITY_CHARS:
                problems.append((name, f"{len(text):,} characters of JSON; at most {MAX_QUALITY_CHARS:,}"))
        else:
            size += len(text)
    if size > MAX_EXTRA_CHARS:
        problems.append(("record", f"extra fields hold {size:,} characters of JSON; at most {MAX_EXTRA_CHARS:,}"))
    return problems


_PLAIN = (str, bool, type(None))


def json_value_problem(value: Any, max_depth: int) -> str | None:
    """None if `value` is plain JSON (objects with text keys, arrays, text, finite numbers within
    64 bits, true/false/null) nested at most `max_depth` levels, else what is wrong with it. Walks
    without recursion, so any depth is safe to inspect. Text is not checked for lone surrogates
    here: encoding the JSON (`extra_problems`) finds them."""
    kind = type(value)
    if kind is not dict and kind is not list:
        return _scalar_problem(value)
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > max_depth:
            return f"nested more than {max_depth} levels deep"
        if type(item) is dict:
            for key in item:
                if type(key) is not str:
                    return "object keys must be text"
            children: Iterable[Any] = item.values()
        else:
            children = item
        for child in children:
            kind = type(child)
            if kind in _PLAIN:
                continue
            if kind is dict or kind is list:
                stack.append((child, depth + 1))
            elif (problem := _scalar_problem(child)) is not None:
                return problem
    return None


def _scalar_problem(value: Any) -> str | None:
    kind = type(value)
    if kind in _PLAIN:
        return None
    if kind is int:
        return None if -MAX_JSON_INT <= value <= MAX_JSON_INT else "a whole number beyond 64 bits"
    if kind is float:
        return None if math.isfinite(value) else "numbers must be finite (no NaN or Infinity)"
    return f"not a JSON value ({kind.__name__})"
