"""Reading rows that older versions wrote: a row may break the rules `storage.records` enforces on
every write (a token count stored as text, flags that are not a JSON array). Reads repair such
values on the way out (`repair_record`, `repair_column`) and say which fields were wrong, so one
damaged row never breaks a listing, the statistics or an export."""
from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from storage.records import MAX_COUNT, STORAGE_KEYS

TEXT_COLUMNS = ("id", "question", "answer", "reasoning", "case_citation", "topic", "difficulty",
                "created_at", "updated_at")
OPTIONAL_TEXT_COLUMNS = ("sample_type", "provider", "model", "batch_id", "duplicate_of")
COUNT_COLUMNS = ("prompt_tokens", "completion_tokens", "attempts")
NUMBER_COLUMNS = ("latency", "quality_score")


def _as_text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else str(value)


def _fix_text(value: Any, optional: bool) -> tuple[Any, bool]:
    """(usable value, whether it was damaged) for a text column."""
    if type(value) is str:
        return value, False
    if value is None:
        return ("", True) if not optional else (None, False)
    return _as_text(value), True


def _fix_count(value: Any) -> tuple[Any, bool]:
    if value is None:
        return None, False
    if type(value) is int and 0 <= value <= MAX_COUNT:
        return value, False
    if type(value) is float and value.is_integer() and 0 <= value <= MAX_COUNT:
        return int(value), True
    return None, True


def _fix_number(value: Any) -> tuple[Any, bool]:
    if value is None:
        return None, False
    if type(value) is float and math.isfinite(value):
        return value, False
    if type(value) is int:
        return float(value), False
    return None, True


def _fix_simulated(value: Any) -> tuple[bool, bool]:
    if value in (0, 1) and type(value) in (int, bool):
        return bool(value), False
    return False, value is not None


def _no_constants(name: str) -> None:
    return None


_DECODER = json.JSONDecoder(parse_constant=_no_constants)   # NaN / Infinity in stored JSON read as null


def _fix_flags(value: Any) -> tuple[list[str], bool]:
    if value is None or value == "" or value == "[]":
        return [], False
    if isinstance(value, list):
        flags = value
    else:
        try:
            flags = _DECODER.decode(_as_text(value))
        except ValueError:
            return [], True
    if not isinstance(flags, list):
        return [], True
    kept = [flag for flag in flags if type(flag) is str]
    return kept, len(kept) != len(flags)


def _fix_extra(value: Any) -> tuple[dict[str, Any], bool]:
    if value is None or value == "":
        return {}, False
    try:
        extra = _DECODER.decode(value if type(value) is str else _as_text(value))
    except (ValueError, RecursionError):
        return {}, True
    if not isinstance(extra, dict):
        return {}, True
    return extra, False


def repair_column(name: str, values: list[Any]) -> tuple[list[Any], list[int]]:
    """A column as read (`quality_flags` still JSON text) made usable: (values, positions of
    damaged ones). Text that is not text becomes text, counts that are not whole numbers and
    numbers that are not finite become null, flags that are not a list of codes become []."""
    damaged: list[int] = []
    if name in TEXT_COLUMNS or name in OPTIONAL_TEXT_COLUMNS:
        optional = name in OPTIONAL_TEXT_COLUMNS
        if all(type(v) is str or (optional and v is None) for v in values):
            return values, damaged
        fix = lambda v: _fix_text(v, optional)  # noqa: E731
    elif name in COUNT_COLUMNS:
        if all(v is None or (type(v) is int and 0 <= v <= MAX_COUNT) for v in values):
            return values, damaged
        fix = _fix_count
    elif name in NUMBER_COLUMNS:
        fix = _fix_number
    elif name == "simulated":
        fix = _fix_simulated
    elif name == "quality_flags":
        fix = _fix_flags
    else:
        return values, damaged
    out = []
    for position, value in enumerate(values):
        fixed, bad = fix(value)
        out.append(fixed)
        if bad:
            damaged.append(position)
    return out, damaged


_FIXES: dict[str, Any] = {
    **{name: (lambda v: _fix_text(v, False)) for name in TEXT_COLUMNS},
    **{name: (lambda v: _fix_text(v, True)) for name in OPTIONAL_TEXT_COLUMNS},
    **{name: _fix_count for name in COUNT_COLUMNS},
    **{name: _fix_number for name in NUMBER_COLUMNS},
    "simulated": _fix_simulated,
}
_FLOAT_OK = (float, int, type(None))


def _sound(data: dict[str, Any]) -> bool:
    """Whether every column holds its type (the common case, checked quickly)."""
    get = data.get
    for name in TEXT_COLUMNS:
        if type(get(name)) is not str:
            return False
    for name in OPTIONAL_TEXT_COLUMNS:
        value = get(name)
        if value is not None and type(value) is not str:
            return False
    for name in COUNT_COLUMNS:
        value = get(name)
        if value is not None and (type(value) is not int or not 0 <= value <= MAX_COUNT):
            return False
    for name in NUMBER_COLUMNS:
        value = get(name)
        if type(value) not in _FLOAT_OK or (type(value) is float and not math.isfinite(value)):
            return False
    return get("simulated") in (0, 1) and type(get("simulated")) is int


def repair_record(row: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A stored row (columns as read, `quality_flags` and `extra` as JSON text) as a record, and
    the names of the fields that held something they should not (those come back repaired: see
    `repair_column`; an unreadable `extra` is left out)."""
    data = dict(row)
    data.pop("seq", None)
    damaged = []
    if _sound(data):
        data["simulated"] = data["simulated"] == 1
        for name in NUMBER_COLUMNS:
            if type(data.get(name)) is int:
                data[name] = float(data[name])
    else:
        for name, fix in _FIXES.items():
            if name in data:
                data[name], bad = fix(data[name])
                if bad:
                    damaged.append(name)
    if "quality_flags" in data:
        data["quality_flags"], bad = _fix_flags(data["quality_flags"])
        if bad:
            damaged.append("quality_flags")
    extra, bad = _fix_extra(data.pop("extra", None))
    if bad:
        damaged.append("extra")
    for key, value in extra.items():
        if key not in STORAGE_KEYS:
            data.setdefault(key, value)
    return data, damaged
