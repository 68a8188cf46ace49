"""Response schemas for `@operation(response=...)`: small builders and the shared components.

Request bodies and query strings need none of this: their schemas come from the pydantic models.
"""
from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter

from state import BatchState

Json = dict[str, Any]

STRING: Json = {"type": "string"}
INT: Json = {"type": "integer"}
NUMBER: Json = {"type": "number"}
BOOL: Json = {"type": "boolean"}
OBJ: Json = {"type": "object"}
BINARY: Json = {"type": "string", "format": "binary"}


def nullable(schema: Json) -> Json:
    return {"anyOf": [schema, {"type": "null"}]}


def ref(name: str) -> Json:
    """A reference to one of `COMPONENTS`."""
    if name not in COMPONENTS:
        raise KeyError(f"no schema component {name!r}")
    return {"$ref": f"#/components/schemas/{name}"}


def obj(*required: str, **properties: Json) -> Json:
    """An object with these required keys and these described properties (others may appear)."""
    return {"type": "object", "required": list(required), "properties": properties}


def ok(*required: str, **properties: Json) -> Json:
    """A `{"success": true, ...}` answer."""
    return obj("success", *required, success={"const": True}, **properties)


def arr(items: Json) -> Json:
    return {"type": "array", "items": items}


def listing(key: str, items: Json, *required: str, **properties: Json) -> Json:
    """`{"success": true, <key>: [items], "count": n, ...}`."""
    return ok(key, "count", *required, **{key: arr(items), "count": INT}, **properties)


_TEXT = ("question", "answer", "reasoning", "topic", "difficulty", "case_citation")
_SAMPLE: Json = obj(
    "id", *_TEXT,
    id=STRING, **{name: STRING for name in _TEXT},
    sample_type=nullable(STRING), provider=nullable(STRING), model=nullable(STRING), batch_id=nullable(STRING),
    created_at=STRING, updated_at=STRING, prompt_tokens=nullable(INT), completion_tokens=nullable(INT),
    latency=nullable(NUMBER), attempts=nullable(INT), simulated=BOOL, quality_score=nullable(NUMBER),
    quality_flags=arr(STRING), duplicate_of=nullable(STRING))
_SAMPLE["description"] = "A sample record; imported rows may carry extra keys."

_HISTORY: Json = obj(
    "id", "started_at", "status", "samples_generated",
    id=STRING, batch_id=STRING, started_at=STRING, completed_at=nullable(STRING), model=nullable(STRING),
    provider=nullable(STRING), topic_filter=nullable(STRING), difficulty_filter=nullable(STRING),
    reasoning_instruction=nullable(STRING), sample_type_filter=nullable(STRING), target=INT, target_count=INT,
    samples_generated=INT, tokens_used=INT, status={"type": "string", "enum": ["running", "completed", "stopped",
                                                                              "failed"]},
    errors=arr(OBJ), errors_total=INT, model_switches=arr(OBJ), provider_switches=arr(OBJ),
    final_error=nullable(STRING))

_ERROR: Json = {"type": "object", "required": ["success", "error"],
                "properties": {"success": {"const": False}, "error": {"type": "string"}}}


def _batch_state() -> Json:
    schema = TypeAdapter(BatchState).json_schema()
    schema["description"] = "The state of one batch (status endpoint, SSE frames)."
    return schema


COMPONENTS: dict[str, Json] = {"Sample": _SAMPLE, "Error": _ERROR, "HistoryRecord": _HISTORY,
                               "BatchState": _batch_state()}
