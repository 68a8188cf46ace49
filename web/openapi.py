"""`GET /api/openapi.json`, generated from the routes' `@operation` declarations.

Every rule in the app's URL map whose view is declared becomes an operation: path parameters
from the rule, query parameters and the request body from the pydantic models the route
validates with, the answer from its response schema. apispec assembles the document.
"""
from __future__ import annotations

import re
from typing import Any

from apispec import APISpec
from flask import Blueprint, Flask, current_app, jsonify
from pydantic import BaseModel
from werkzeug.routing import Rule

from web.operation import Operation, declared, operation
from web.schemas import COMPONENTS, OBJ, ref

bp = Blueprint("openapi", __name__)

WRITE_METHODS = ("POST", "PUT", "DELETE", "PATCH")
REF_TEMPLATE = "#/components/schemas/{model}"
_ARGUMENT = re.compile(r"<(?:(?P<converter>[a-zA-Z_]\w*)(?:\([^)]*\))?:)?(?P<name>[a-zA-Z_]\w*)>")
_CONVERTED = {"int": {"type": "integer"}, "float": {"type": "number"}}
_STATUS_TEXT = {400: "invalid input (the message names the field)", 401: "missing or wrong bearer token",
                403: "a write from a web page on an origin not in CORS_ORIGINS",
                404: "not found", 409: "conflict", 413: "request body too large",
                415: "the body is not declared Content-Type: application/json", 502: "upstream failure",
                503: "unavailable now: no provider can serve it, or too many open event streams "
                     "(Retry-After when waiting helps)"}


def _model_schema(model: type[BaseModel], spec: APISpec) -> dict[str, Any]:
    """The model's JSON schema; its nested definitions become components."""
    schema = model.model_json_schema(ref_template=REF_TEMPLATE)
    for name, definition in schema.pop("$defs", {}).items():
        if name not in spec.components.schemas:
            spec.components.schema(name, definition)
    return schema


def _query_parameters(model: type[BaseModel], spec: APISpec) -> list[dict[str, Any]]:
    schema = _model_schema(model, spec)
    required = set(schema.get("required", ()))
    parameters = []
    for name, prop in schema["properties"].items():
        prop = dict(prop)
        prop.pop("title", None)
        description = prop.pop("description", "")
        options = [s for s in prop.pop("anyOf", ()) if s.get("type") != "null"]  # absent, not null, in a query
        if len(options) == 1:
            prop = {**options[0], **prop}
        elif options:
            prop["anyOf"] = options
        if "default" in prop and prop["default"] is None:
            del prop["default"]
        parameters.append({"name": name, "in": "query", "required": name in required, "schema": prop,
                           **({"description": description} if description else {})})
    return parameters


def _path(rule: Rule) -> tuple[str, list[dict[str, Any]]]:
    """The rule as an OpenAPI path template, and its path parameters."""
    parameters = [{"name": m["name"], "in": "path", "required": True,
                   "schema": _CONVERTED.get(m["converter"] or "", {"type": "string", "minLength": 1})}
                  for m in _ARGUMENT.finditer(rule.rule)]
    return _ARGUMENT.sub(lambda m: "{" + m["name"] + "}", rule.rule), parameters


def _responses(op: Operation, method: str) -> dict[str, Any]:
    headers = {name: {"description": text, "schema": {"type": "string"}} for name, text in op.headers.items()}
    ok: dict[str, Any] = {"description": op.summary,
                          "content": {media: {"schema": op.response} for media in op.media}}
    if headers:
        ok["headers"] = headers
    statuses = set(op.errors)
    if op.query is not None or op.body is not None:
        statuses.add(400)
    if op.body is not None:
        statuses |= {413, 415}
    if method in WRITE_METHODS:
        statuses.add(403)
        if not op.public:
            statuses.add(401)
    errors = {str(status): {"description": _STATUS_TEXT.get(status, "error"),
                            "content": {"application/json": {"schema": ref("Error")}}} for status in sorted(statuses)}
    accepted: dict[str, Any] = {}
    if op.accepted is not None:
        accepted["202"] = {"description": "accepted: the work goes on in the background",
                           "content": {"application/json": {"schema": op.accepted}}}
        if op.accepted_headers:
            accepted["202"]["headers"] = {name: {"description": text, "schema": {"type": "string"}}
                                          for name, text in op.accepted_headers.items()}
    return {"200": ok, **accepted, **errors}


def _operation(op: Operation, rule: Rule, method: str, spec: APISpec) -> dict[str, Any]:
    _, parameters = _path(rule)
    if op.query is not None:
        parameters += _query_parameters(op.query, spec)
    out: dict[str, Any] = {"operationId": rule.endpoint, "summary": op.summary,
                           "tags": [rule.endpoint.split(".")[0]], "parameters": parameters,
                           "responses": _responses(op, method)}
    if op.description:
        out["description"] = op.description
    if op.body is not None:
        out["requestBody"] = {"required": op.body_required,
                              "content": {"application/json": {"schema": _model_schema(op.body, spec)}}}
    if method in WRITE_METHODS and not op.public:
        out["security"] = [{"bearer": []}, {}]   # the token is needed only when API_TOKEN is set
    return out


def build(app: Flask) -> dict[str, Any]:
    """The OpenAPI document of every declared route of `app`."""
    spec = APISpec(title="UK Law Dataset Generator API", version="1.0.0", openapi_version="3.1.0",
                   info={"description": "Generates UK-law training samples through Groq and Cerebras with fallback."},
                   servers=[{"url": "/"}])
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    for name, schema in COMPONENTS.items():
        spec.components.schema(name, schema)
    paths: dict[str, dict[str, Any]] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        op = declared(app.view_functions[rule.endpoint])
        if op is None:
            continue
        template, _ = _path(rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            paths.setdefault(template, {})[method.lower()] = _operation(op, rule, method, spec)
    for template, operations in paths.items():
        spec.path(path=template, operations=operations)
    return spec.to_dict()


@bp.get("/api/openapi.json")
@operation("This document: every endpoint, its parameters, request body and answers", response=OBJ)
def openapi_json():
    document = current_app.extensions.get("openapi")
    if document is None:  # routes are all registered before the first request
        document = current_app.extensions["openapi"] = build(current_app)
    return jsonify(document)
