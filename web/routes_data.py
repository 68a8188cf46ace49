"""The dataset: browse, statistics, edit, import, download, search."""
from __future__ import annotations

import json
from typing import Any, Iterator

from flask import Blueprint, Response, jsonify, request
from pydantic import ValidationError

from config.catalog import DIFFICULTIES
from quality.checks import FLAGS
from quality.service import REJECT_CODES
from generation.requests import RequestProblem, check_difficulty, check_sample_type
from dataset.stats import basic_stats, detailed_stats, token_stats
from storage.store import EDITABLE_FIELDS, FILTER_COLUMNS, REQUIRED_IMPORT_FIELDS, SEARCH_FIELDS, DuplicateId, new_sample_id
from web.errors import ApiError
from web.services import services
from web.validation import (DownloadBody, NewSample, SampleFields, describe, json_object, parse_body, query_choice,
                            query_int)

bp = Blueprint("data", __name__)

FILTER_PARAMS = FILTER_COLUMNS + ("practice_area", "flag")
FLAG_CODES = tuple(FLAGS)
QUALITY_FIELDS = ("quality_score", "quality_flags", "duplicate_of", "quality")


def filters_from_query() -> dict[str, Any]:
    filters: dict[str, Any] = {}
    for name in FILTER_PARAMS:
        value = request.args.get(name)
        if value is not None and value.strip():
            filters[name] = value.strip()
    if "difficulty" in filters and filters["difficulty"] not in DIFFICULTIES:
        raise ApiError(400, f"query parameter difficulty must be one of {', '.join(DIFFICULTIES)}")
    for name in ("flag", "without_flag"):
        code = request.args.get(name, "").strip()
        if code and code not in FLAG_CODES:
            raise ApiError(400, f"query parameter {name} must be a quality flag: {', '.join(FLAG_CODES)}")
    if request.args.get("without_flag", "").strip():
        filters["exclude_flags"] = [request.args["without_flag"].strip()]
    clean = request.args.get("clean", "").strip()
    if clean:
        if clean not in ("true", "false"):
            raise ApiError(400, "query parameter clean must be true or false")
        if clean == "true":
            filters["exclude_flags"] = [*filters.get("exclude_flags", []), *REJECT_CODES]
    min_score = request.args.get("min_score", "").strip()
    if min_score:
        try:
            filters["min_score"] = float(min_score)
        except ValueError:
            raise ApiError(400, "query parameter min_score must be a number between 0 and 1") from None
        if not 0 <= filters["min_score"] <= 1:
            raise ApiError(400, "query parameter min_score must be a number between 0 and 1")
    simulated = request.args.get("simulated")
    if simulated is not None and simulated.strip():
        if simulated not in ("true", "false"):
            raise ApiError(400, "query parameter simulated must be true or false")
        filters["simulated"] = simulated == "true"
    return filters


def _json_array(records: Iterator[dict[str, Any]]) -> Iterator[str]:
    yield "["
    first = True
    for record in records:
        yield ("" if first else ",") + json.dumps(record, ensure_ascii=False)
        first = False
    yield "]"


def _checked(fields: dict[str, Any]) -> dict[str, Any]:
    try:
        if "difficulty" in fields:
            if not fields["difficulty"]:
                raise RequestProblem("difficulty must not be empty")
            check_difficulty(fields["difficulty"])
        if fields.get("sample_type"):
            check_sample_type(fields["sample_type"], allow_balance=False)
    except RequestProblem as exc:
        raise ApiError(400, str(exc)) from None
    if "topic" in fields and not str(fields["topic"]).strip():
        raise ApiError(400, "topic must not be empty")
    return fields


def _admitted(record: dict[str, Any]) -> dict[str, Any]:
    """The record with its quality annotations; 409 if its question duplicates another sample's."""
    record, rejection = services().quality.admit(record, strict=False)
    if rejection is not None:
        raise ApiError(409, f"this question duplicates sample {record.get('duplicate_of')!r}",
                       duplicate_of=record.get("duplicate_of"))
    return record


@bp.get("/api/data")
def data():
    svc = services()
    filters = filters_from_query()
    limit = query_int("limit", None, 0, 10_000_000)
    offset = query_int("offset", 0, 0, 10_000_000) or 0
    total = svc.store.count(filters)
    records = svc.store.iter_records(filters, limit=limit, offset=offset)
    response = Response(_json_array(records), mimetype="application/json")
    response.headers["X-Total-Count"] = str(total)
    return response


@bp.get("/api/stats")
def stats():
    svc = services()
    return jsonify(svc.stats.cached("basic", lambda f: basic_stats(f, svc.store.size_bytes())))


@bp.get("/api/stats/detailed")
def stats_detailed():
    return jsonify({"success": True, "stats": services().stats.cached("detailed", detailed_stats)})


@bp.get("/api/stats/tokens")
def stats_tokens():
    svc = services()
    return jsonify({"success": True, "stats": svc.stats.cached("tokens", lambda f: token_stats(f, svc.config))})


@bp.get("/api/sample/<sample_id>")
def get_sample(sample_id: str):
    record = services().store.get(sample_id)
    if record is None:
        raise ApiError(404, f"no sample with id {sample_id!r}")
    return jsonify({"success": True, "sample": record})


@bp.put("/api/sample/<sample_id>")
def update_sample(sample_id: str):
    body = parse_body(SampleFields)
    if body.id is not None and body.id != sample_id:
        raise ApiError(400, f"body id {body.id!r} does not match the URL's {sample_id!r}")
    changes = {k: v for k, v in body.model_dump(exclude={"id"}).items() if k in EDITABLE_FIELDS and v is not None}
    if not changes:
        raise ApiError(400, f"nothing to change: send at least one of {', '.join(EDITABLE_FIELDS)}")
    svc = services()
    current = svc.store.get(sample_id)
    if current is None:
        raise ApiError(404, f"no sample with id {sample_id!r}")
    merged = _admitted({**current, **_checked(changes)})
    try:
        svc.store.update(sample_id, {k: merged[k] for k in (*changes, *QUALITY_FIELDS)})
    except Exception:
        svc.quality.forget(sample_id)   # the index goes back to the stored question
        raise
    return jsonify({"success": True, "message": f"sample {sample_id} updated", "total_samples": svc.store.count()})


@bp.delete("/api/sample/<sample_id>")
def delete_sample(sample_id: str):
    svc = services()
    if not svc.store.delete(sample_id):
        raise ApiError(404, f"no sample with id {sample_id!r}")
    return jsonify({"success": True, "message": f"sample {sample_id} deleted", "total_samples": svc.store.count()})


@bp.get("/api/sample/<sample_id>/download")
def download_sample(sample_id: str):
    record = services().store.get(sample_id)
    if record is None:
        raise ApiError(404, f"no sample with id {sample_id!r}")
    response = Response(json.dumps(record, ensure_ascii=False, indent=2), mimetype="application/json")
    response.headers["Content-Disposition"] = f'attachment; filename="{_safe_name(sample_id)}.json"'
    return response


@bp.post("/api/samples/download")
def download_samples():
    body = parse_body(DownloadBody)
    store = services().store
    wanted = list(dict.fromkeys(body.sample_ids))
    found = {r["id"]: r for r in store.iter_records({"ids": wanted})}
    if not found:
        raise ApiError(404, "none of the requested samples exist")
    lines = "".join(json.dumps(found[i], ensure_ascii=False) + "\n" for i in wanted if i in found)
    response = Response(lines, mimetype="application/x-ndjson")
    response.headers["Content-Disposition"] = 'attachment; filename="samples.jsonl"'
    response.headers["X-Missing-Count"] = str(len(wanted) - len(found))
    return response


def _parse_import(content: str) -> list[dict[str, Any]]:
    """Every line as a record; 400 naming the first bad line."""
    records = []
    for number, line in enumerate(content.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as exc:
            raise ApiError(400, f"line {number}: not valid JSON ({exc.msg})") from None
        if not isinstance(item, dict):
            raise ApiError(400, f"line {number}: expected a JSON object")
        missing = [f for f in REQUIRED_IMPORT_FIELDS if f not in item]
        if missing:
            raise ApiError(400, f"line {number}: missing required field(s): {', '.join(missing)}")
        wrong = [f for f in REQUIRED_IMPORT_FIELDS if not isinstance(item[f], str)]
        if wrong:
            raise ApiError(400, f"line {number}: field(s) must be strings: {', '.join(wrong)}")
        empty = [f for f in ("id", "question", "answer", "topic") if not item[f].strip()]
        if empty:
            raise ApiError(400, f"line {number}: field(s) must not be empty: {', '.join(empty)}")
        try:
            _checked({"difficulty": item["difficulty"], "sample_type": item.get("sample_type")
                      if isinstance(item.get("sample_type"), str) else None})
        except ApiError as exc:
            raise ApiError(400, f"line {number}: {exc.message}") from None
        records.append(item)
    if not records:
        raise ApiError(400, "content has no records")
    return records


@bp.post("/api/import/jsonl")
def import_jsonl():
    body = json_object()
    content = body.get("content")
    if not isinstance(content, str) or not content.strip():
        raise ApiError(400, "content must be a non-empty string of JSON lines")
    records = _parse_import(content)
    svc = services()
    existing = svc.store.exists([r["id"] for r in records])
    fresh, duplicates, duplicate_questions, seen = [], [], [], set()
    for record in records:
        if record["id"] in existing or record["id"] in seen:
            duplicates.append(record["id"])
            continue
        admitted, rejection = svc.quality.admit({**record, "simulated": bool(record.get("simulated"))}, strict=False)
        if rejection is not None:
            duplicate_questions.append({"id": record["id"], "duplicate_of": admitted.get("duplicate_of")})
            continue
        seen.add(record["id"])
        fresh.append(admitted)
    try:
        svc.store.add_many(fresh) if fresh else None
    except Exception as exc:   # nothing was stored: release every reservation
        for record in fresh:
            svc.quality.forget(record["id"])
        if isinstance(exc, DuplicateId):
            raise ApiError(409, "a sample with one of these ids was added meanwhile; retry the import") from None
        raise
    skipped = len(duplicates) + len(duplicate_questions)
    message = f"imported {len(fresh)} sample(s)" + (f", skipped {skipped} duplicate(s)" if skipped else "")
    flagged = sum(1 for r in fresh if set(r["quality_flags"]) & set(REJECT_CODES))
    return jsonify({"success": True, "message": message, "imported": len(fresh), "duplicates": duplicates,
                    "duplicate_questions": duplicate_questions, "flagged_for_review": flagged,
                    "total_samples": svc.store.count()})


@bp.post("/api/add")
def add_sample():
    try:
        body = NewSample.model_validate(json_object())
    except ValidationError as exc:
        raise ApiError(400, f"invalid sample: {describe(exc)}") from None
    record = _checked(body.model_dump())
    record["id"] = record["id"] or new_sample_id(record.get("provider") or "manual")
    svc = services()
    if svc.store.get(record["id"]) is not None:
        raise ApiError(409, f"a sample with id {record['id']!r} already exists")
    admitted = _admitted(record)
    try:
        svc.store.add({**admitted, "simulated": False})
    except Exception as exc:   # not stored: release the reservation
        svc.quality.forget(record["id"])
        if isinstance(exc, DuplicateId):
            raise ApiError(409, f"a sample with id {record['id']!r} already exists") from None
        raise
    return jsonify({"success": True, "id": record["id"], "total_samples": svc.store.count()})


@bp.get("/api/samples/random")
def random_samples():
    count = query_int("count", 5, 1, 100)
    difficulty = query_choice("difficulty", DIFFICULTIES)
    samples = services().store.random(count or 5, {"difficulty": difficulty})
    return jsonify({"success": True, "samples": samples, "count": len(samples)})


@bp.get("/api/search")
def search():
    query = (request.args.get("q") or "").strip()
    if not query:
        raise ApiError(400, "query parameter q is required")
    if len(query) > 500:
        raise ApiError(400, "query parameter q is too long (500 characters at most)")
    field = query_choice("field", SEARCH_FIELDS + ("all",), "all")
    limit = query_int("limit", 50, 1, 1000)
    results = services().store.search(query, None if field == "all" else field, limit or 50)
    return jsonify({"success": True, "results": results, "count": len(results), "query": query, "field": field})


@bp.get("/api/batch/<batch_id>/samples")
def batch_samples(batch_id: str):
    svc = services()
    samples = svc.store.list({"batch_id": batch_id})
    info = svc.batches.history_record(batch_id) if svc.batches is not None else None
    if not samples and info is None:
        raise ApiError(404, f"no batch with id {batch_id!r}")
    return jsonify({"success": True, "batch_id": batch_id, "samples": samples, "count": len(samples),
                    "batch_info": info})


def _safe_name(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)[:150] or "sample"
