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

_BLOCKED: Json = obj(
    "provider", "model", "why", provider=STRING, model=STRING,
    why={"type": "string", "enum": ["cooling", "disabled", "budget", "probe", "failed", "free"]},
    category=nullable(STRING), reason=nullable(STRING), message=nullable(STRING), scope=nullable(STRING),
    until=nullable(STRING), seconds=nullable(NUMBER), window=nullable(STRING), windows=arr(STRING))
_BLOCKED["description"] = ("One candidate and what held it: cooling (category, until), disabled (its key was "
                           "rejected), budget (window: the limit that held it longest, e.g. tpm), probe (a first "
                           "request to it was pending), failed (tried in that attempt), free (nothing any more).")
_WAIT: Json = obj(
    "from", "until", "reason", "blocked",
    **{"from": STRING}, until=STRING, reason=STRING, kind={"type": "string", "enum": ["all_cooling", "topics_skipped"]},
    blocked=arr(_BLOCKED), samples_generated=INT, checks=INT, ended_at=STRING)
_WAIT["description"] = ("A time the batch could not go on and lost nothing: every candidate cooling down or out "
                        "of budget (or every topic skipped). `until` is the expected end; `ended_at` is set when "
                        "a sample was stored again or the batch ended; `checks` counts the workers that found it.")
_USED: Json = {"type": "object", "additionalProperties": INT}

_HISTORY: Json = obj(
    "id", "started_at", "status", "samples_generated",
    id=STRING, batch_id=STRING, started_at=STRING, completed_at=nullable(STRING), model=nullable(STRING),
    provider=nullable(STRING), topic_filter=nullable(STRING), difficulty_filter=nullable(STRING),
    reasoning_instruction=nullable(STRING), sample_type_filter=nullable(STRING), target=INT, target_count=INT,
    samples_generated=INT, tokens_used=INT, status={"type": "string", "enum": ["running", "completed", "stopped",
                                                                              "failed"]},
    errors=arr(OBJ), errors_total=INT, waits=arr(_WAIT), waits_total=INT, model_switches=arr(OBJ),
    provider_switches=arr(OBJ), final_error=nullable(STRING), requested_provider=nullable(STRING),
    requested_model=nullable(STRING), models_used=_USED, providers_used=_USED,
    requested_models=nullable(arr(STRING)), strategy=nullable(STRING), cost_usd=NUMBER)
_HISTORY["properties"]["model"]["description"] = ("The model that produced the most samples "
                                                  "(what was requested until one is stored)")
_HISTORY["properties"]["provider"]["description"] = "The provider of that model"

_ERROR: Json = {"type": "object", "required": ["success", "error"],
                "properties": {"success": {"const": False}, "error": {"type": "string"}}}


_STATE_DESCRIPTIONS = {
    "provider": "The provider that produced the most samples (requested_provider until one is stored)",
    "model": "The model that produced the most samples (requested_model until one is stored)",
    "requested_provider": "The provider the batch was started with (null: the default order)",
    "requested_model": "The model the batch was started with (null: the provider's list)",
    "errors": "Failures that cost work: failed attempts (not rate limits), rejected outputs, storage, the end",
    "waits": "Times the batch waited for cooling models or budget (the latest; waits_total counts all)",
    "models_used": '"provider/model" -> samples stored by this batch',
    "providers_used": "provider -> samples stored by this batch",
    "rate_per_minute": "Samples stored over the last minute (waits included; never over less than 10 s)",
    "eta_seconds": "The rest of a current wait plus the remaining samples at rate_per_minute; null: unknown",
    "eta_note": "Set when the estimate includes a wait or cannot be made, saying why",
    "requested_models": 'The batch\'s own fallback order ("provider/model"), tried exactly; null: the configured order',
    "strategy": "How candidates are ordered: order, cheapest, fastest or spread (kept when the batch resumes)",
    "cost_usd": "The stored samples' tokens at the configured prices (USD)",
}


def _batch_state() -> Json:
    schema = TypeAdapter(BatchState).json_schema()
    schema["description"] = "The state of one batch (status endpoint, SSE frames)."
    for name, text in _STATE_DESCRIPTIONS.items():
        schema["properties"][name]["description"] = text
    schema["properties"]["waits"]["items"] = _WAIT
    return schema


COMPONENTS: dict[str, Json] = {"Sample": _SAMPLE, "Error": _ERROR, "HistoryRecord": _HISTORY,
                               "BatchState": _batch_state()}
