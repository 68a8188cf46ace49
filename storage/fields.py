"""The samples table's columns, by role, and a record's JSON as the API sends it."""
from __future__ import annotations

import json
from typing import Any, Mapping

import orjson

CONTENT_FIELDS = ("question", "answer", "reasoning", "case_citation")
EDITABLE_FIELDS = CONTENT_FIELDS + ("topic", "difficulty", "sample_type")
REQUIRED_IMPORT_FIELDS = ("id", "question", "answer", "topic", "difficulty", "case_citation", "reasoning")
METADATA_FIELDS = ("provider", "model", "batch_id", "created_at", "updated_at", "prompt_tokens",
                   "completion_tokens", "latency", "attempts", "simulated", "quality_score", "quality_flags",
                   "duplicate_of")
COLUMNS = ("id",) + EDITABLE_FIELDS + METADATA_FIELDS + ("extra",)
WRITTEN = COLUMNS + ("question_key",)   # what a write sets: the columns and the unique question key
FILTER_COLUMNS = ("topic", "difficulty", "sample_type", "provider", "model", "batch_id")
ROW = ", ".join(COLUMNS)   # every stored field, named (not `*`: column order differs in adopted files)


def encode_record(record: Mapping[str, Any]) -> bytes:
    """A record as JSON (orjson: UTF-8, compact), as `iter_json` and `/api/data` send it."""
    try:
        return orjson.dumps(record, default=str)
    except orjson.JSONEncodeError:   # what orjson refuses (a lone surrogate, a huge integer), json escapes
        return json.dumps(record, default=str).encode()
