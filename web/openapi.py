"""`GET /api/openapi.json`: every endpoint, its parameters, request body and response shape.

Request bodies come from the same pydantic models the routes validate with, so the description
cannot drift from what the server accepts.
"""
from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify
from pydantic import BaseModel

from config.catalog import DIFFICULTIES
from web import validation as v

bp = Blueprint("openapi", __name__)

OBJ: dict[str, Any] = {"type": "object"}
SAMPLE = {"type": "object", "required": ["id", "question", "answer", "reasoning", "topic", "difficulty",
                                         "case_citation"],
          "properties": {k: {"type": ["string", "null"]} for k in (
              "id", "question", "answer", "reasoning", "topic", "difficulty", "case_citation", "sample_type",
              "provider", "model", "batch_id", "created_at", "updated_at")}}
ERROR = {"type": "object", "required": ["success", "error"],
         "properties": {"success": {"const": False}, "error": {"type": "string"}}}


def ok(*required: str, **properties: Any) -> dict[str, Any]:
    props = {"success": {"type": "boolean"}, **properties}
    return {"type": "object", "required": ["success", *required], "properties": props}


def obj(*required: str, **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": list(required), "properties": properties}


def arr(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


def q(name: str, schema: dict[str, Any], description: str = "", required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema, "description": description}


def path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}


FILTERS = [q("topic", {"type": "string"}), q("practice_area", {"type": "string"}),
           q("difficulty", {"type": "string", "enum": list(DIFFICULTIES)}), q("sample_type", {"type": "string"}),
           q("provider", {"type": "string"}), q("model", {"type": "string"}), q("batch_id", {"type": "string"}),
           q("flag", {"type": "string"}, "quality flag code"), q("simulated", {"type": "string", "enum": ["true", "false"]})]
STRING = {"type": "string"}
INT = {"type": "integer"}

# (method, path, summary, parameters, request model, response schema, extra statuses)
ENDPOINTS: list[tuple[str, str, str, list[dict[str, Any]], type[BaseModel] | None, dict[str, Any], tuple[int, ...]]] = [
    ("get", "/api/health", "Liveness and readiness", [], None,
     obj("status", "dataset_exists", "groq_configured", "batch_generation_running"), ()),
    ("get", "/api/topics", "The 42 topics", [], None, obj("topics", topics=arr(obj("practice_area", "topic"))), ()),
    ("get", "/api/sample-types", "Sample types and the balanced mix", [], None,
     ok("sample_types", "default", sample_types=arr(obj("id", "name"))), ()),
    ("get", "/api/providers", "Providers and their state", [], None,
     ok("providers", "default_provider", providers=arr(obj("id", "name", "enabled"))), ()),
    ("get", "/api/models", "Models from configuration (no network)", [], None,
     ok("models", models=arr(obj("id", "provider"))), ()),
    ("get", "/api/data", "Samples as a bare array (total in X-Total-Count)",
     [q("limit", {"type": "integer", "minimum": 0}), q("offset", {"type": "integer", "minimum": 0}), *FILTERS],
     None, arr(SAMPLE), (400,)),
    ("get", "/api/stats", "Dataset statistics", [], None,
     obj("total", "difficulty_distribution", "top_topics", "file_size_kb", "total_topics", "total_difficulties"), ()),
    ("get", "/api/stats/detailed", "Detailed statistics", [], None, ok("stats"), ()),
    ("get", "/api/stats/tokens", "Token statistics and cost estimates", [], None, ok("stats"), ()),
    ("post", "/api/generate", "Generate one sample (stored unless save is false)", [], v.GenerateBody,
     ok("sample", "tokens_used", "elapsed", sample=SAMPLE), (400, 401, 502, 503)),
    ("post", "/api/import/jsonl", "Import samples from JSON lines", [], v.ImportBody,
     ok("message", "total_samples"), (400, 401, 409)),
    ("post", "/api/add", "Add one sample", [], v.NewSample, ok("total_samples"), (400, 401, 409)),
    ("get", "/api/sample/{sample_id}", "One sample", [path("sample_id")], None, ok("sample"), (404,)),
    ("put", "/api/sample/{sample_id}", "Edit a sample (merge)", [path("sample_id")], v.SampleFields,
     ok("message", "total_samples"), (400, 401, 404)),
    ("delete", "/api/sample/{sample_id}", "Delete a sample", [path("sample_id")], None,
     ok("message", "total_samples"), (401, 404)),
    ("get", "/api/sample/{sample_id}/download", "One sample as a JSON attachment", [path("sample_id")], None,
     SAMPLE, (404,)),
    ("post", "/api/samples/download", "Several samples as a JSONL attachment", [], v.DownloadBody, STRING,
     (400, 404)),
    ("get", "/api/samples/random", "Random samples",
     [q("count", {"type": "integer", "minimum": 1, "maximum": 100}),
      q("difficulty", {"type": "string", "enum": list(DIFFICULTIES)})], None, ok("samples", "count"), (400,)),
    ("get", "/api/search", "Plain-text search",
     [q("q", {"type": "string", "minLength": 1}, required=True),
      q("field", {"type": "string", "enum": ["question", "answer", "reasoning", "case_citation", "topic", "all"]}),
      q("limit", {"type": "integer", "minimum": 1, "maximum": 1000})], None,
     ok("results", "count", "query", "field"), (400,)),
    ("get", "/api/export", "Export the dataset",
     [q("format", {"type": "string", "enum": ["parquet", "jsonl", "csv"]}), *FILTERS], None, STRING, (400,)),
    ("get", "/api/batch/{batch_id}/samples", "Samples of one batch", [path("batch_id")], None,
     ok("batch_id", "samples", "count", "batch_info"), (404,)),
]
EXTRA_ENDPOINTS: list = []  # other modules (batch, quality) append their endpoints here


def _operation(method: str, summary: str, parameters: list, model: type[BaseModel] | None,
               response: dict[str, Any], statuses: tuple[int, ...]) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "parameters": parameters,
                          "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": response}}}}}
    for status in statuses:
        op["responses"][str(status)] = {"description": "error", "content": {"application/json": {"schema": ERROR}}}
    if model is not None:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schema.pop("$defs", None)
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": schema}}}
    return op


def spec() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for method, route, summary, parameters, model, response, statuses in ENDPOINTS + EXTRA_ENDPOINTS:
        paths.setdefault(route, {})[method] = _operation(method, summary, parameters, model, response, statuses)
    return {
        "openapi": "3.1.0",
        "info": {"title": "UK Law Dataset Generator API", "version": "1.0.0",
                 "description": "Generates UK-law training samples through Groq and Cerebras with fallback."},
        "servers": [{"url": "/"}],
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": paths,
    }


@bp.get("/api/openapi.json")
def openapi_json():
    return jsonify(spec())
