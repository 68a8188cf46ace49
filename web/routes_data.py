"""The dataset: browse, statistics, edit, import, download, search."""
from __future__ import annotations

import json
from typing import Any, Iterator

import orjson
from flask import Blueprint, Response, jsonify

from quality.service import REJECT_CODES
from generation.requests import RequestProblem, check_labels
from dataset.importing import LineError, parse_lines
from dataset.stats import basic_stats, detailed_stats, token_stats
from storage.store import EDITABLE_FIELDS, DuplicateId, new_sample_id
from web.errors import ApiError
from web.operation import operation
from web.queries import DataQuery, RandomQuery, SearchQuery
from web.schemas import INT, NUMBER, OBJ, STRING, arr, listing, nullable, obj, ok, ref
from web.services import services
from web.validation import DownloadBody, ImportBody, NewSample, SampleFields

bp = Blueprint("data", __name__)

QUALITY_FIELDS = ("quality_score", "quality_flags", "duplicate_of", "quality")
TOTAL = {"X-Total-Count": "how many samples match the filters"}
ATTACHMENT = {"Content-Disposition": "attachment; filename=..."}
CHANGED = ok("message", "total_samples", message=STRING, total_samples=INT)


def _encode(record: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(record, default=str)
    except orjson.JSONEncodeError:   # what orjson refuses (a lone surrogate, a huge integer), json escapes
        return json.dumps(record, default=str).encode()


def _json_array(records: Iterator[dict[str, Any]], rows_per_chunk: int = 200) -> Iterator[bytes]:
    """The records as one JSON array, encoded with orjson, in chunks of a few hundred rows."""
    yield b"["
    chunk: list[bytes] = []
    first = True
    for record in records:
        chunk.append(_encode(record))
        if len(chunk) == rows_per_chunk:
            yield (b"" if first else b",") + b",".join(chunk)
            chunk, first = [], False
    if chunk:
        yield (b"" if first else b",") + b",".join(chunk)
    yield b"]"


def _checked(fields: dict[str, Any]) -> dict[str, Any]:
    """400 unless the difficulty and sample type are the catalogue's (the import checks the same)."""
    try:
        check_labels(fields)
    except RequestProblem as exc:
        raise ApiError(400, str(exc)) from None
    return fields


def _admitted(record: dict[str, Any]) -> dict[str, Any]:
    """The record with its quality annotations; 409 if its question duplicates another sample's."""
    record, rejection = services().quality.admit(record, strict=False)
    if rejection is not None:
        raise ApiError(409, f"this question duplicates sample {record.get('duplicate_of')!r}",
                       duplicate_of=record.get("duplicate_of"))
    return record


@bp.get("/api/data")
@operation("Samples as a bare array (the matching total in X-Total-Count)", query=DataQuery,
           response=arr(ref("Sample")), headers=TOTAL)
def data(query: DataQuery):
    svc = services()
    filters = query.filters()
    total = svc.store.count(filters)
    records = svc.store.iter_records(filters, limit=query.limit, offset=query.offset)
    response = Response(_json_array(records), mimetype="application/json")
    response.headers["X-Total-Count"] = str(total)
    return response


BASIC_STATS = obj("total", "difficulty_distribution", "top_topics", "file_size_kb", "total_topics",
                  "total_difficulties", total=INT, columns=arr(STRING), file_size_kb=NUMBER, total_topics=INT,
                  difficulty_distribution=arr(obj("difficulty", "len")), top_topics=arr(obj("topic", "len")),
                  total_difficulties=INT)
DETAILED_STATS = obj("total_samples", "difficulty_breakdown", "practice_areas", "avg_lengths", "unique_topics",
                     "unique_practice_areas", total_samples=INT, difficulty_breakdown=arr(obj("difficulty", "count")),
                     topic_breakdown=arr(obj("topic", "len")), practice_areas=arr(obj("practice_area", "len")),
                     avg_lengths=OBJ, unique_topics=INT, unique_practice_areas=INT)
TOKEN_STATS = obj("total_tokens", "total_samples", "avg_tokens_per_sample", "tokens_by_field", "tokens_by_difficulty",
                  "tokens_by_practice_area", "estimated_costs", "encoding", total_tokens=INT, total_samples=INT,
                  avg_tokens_per_sample=NUMBER, tokens_by_field=OBJ, tokens_by_difficulty=OBJ, estimated_costs=OBJ,
                  tokens_by_practice_area=arr(obj("practice_area", "total_tokens")), encoding=STRING)


@bp.get("/api/stats")
@operation("Dataset statistics (no success key)", response=BASIC_STATS)
def stats():
    svc = services()
    return jsonify(svc.stats.cached("basic", lambda f: basic_stats(f, svc.store.size_bytes())))


@bp.get("/api/stats/detailed")
@operation("Detailed statistics", response=ok("stats", stats=DETAILED_STATS))
def stats_detailed():
    return jsonify({"success": True, "stats": services().stats.cached("detailed", detailed_stats)})


@bp.get("/api/stats/tokens")
@operation("Token statistics and cost estimates", response=ok("stats", stats=TOKEN_STATS))
def stats_tokens():
    svc = services()
    return jsonify({"success": True, "stats": svc.stats.cached("tokens", lambda f: token_stats(f, svc.config))})


@bp.get("/api/sample/<sample_id>")
@operation("One sample", response=ok("sample", sample=ref("Sample")), errors=(404,))
def get_sample(sample_id: str):
    record = services().store.get(sample_id)
    if record is None:
        raise ApiError(404, f"no sample with id {sample_id!r}")
    return jsonify({"success": True, "sample": record})


@bp.put("/api/sample/<sample_id>")
@operation("Edit a sample: the given fields merge into it", body=SampleFields, response=CHANGED, errors=(404, 409))
def update_sample(sample_id: str, body: SampleFields):
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
@operation("Delete a sample", response=CHANGED, errors=(404,))
def delete_sample(sample_id: str):
    svc = services()
    if not svc.store.delete(sample_id):
        raise ApiError(404, f"no sample with id {sample_id!r}")
    return jsonify({"success": True, "message": f"sample {sample_id} deleted", "total_samples": svc.store.count()})


@bp.get("/api/sample/<sample_id>/download")
@operation("One sample as a JSON attachment", response=ref("Sample"), headers=ATTACHMENT, errors=(404,))
def download_sample(sample_id: str):
    record = services().store.get(sample_id)
    if record is None:
        raise ApiError(404, f"no sample with id {sample_id!r}")
    response = Response(json.dumps(record, ensure_ascii=False, indent=2), mimetype="application/json")
    response.headers["Content-Disposition"] = f'attachment; filename="{_safe_name(sample_id)}.json"'
    return response


@bp.post("/api/samples/download")
@operation("Several samples as a JSON Lines attachment (reads only: no token needed)", body=DownloadBody,
           response=STRING, media="application/x-ndjson", errors=(404,), public=True,
           headers={**ATTACHMENT, "X-Missing-Count": "how many of the requested ids do not exist"})
def download_samples(body: DownloadBody):
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
    """Every line as a record; 400 naming the first bad line and field."""
    try:
        return parse_lines(content)
    except LineError as exc:
        raise ApiError(400, str(exc)) from None
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


@bp.post("/api/import/jsonl")
@operation("Import samples from JSON lines; duplicates are skipped and listed", body=ImportBody, errors=(409,),
           response=ok("message", "imported", "total_samples", message=STRING, imported=INT, duplicates=arr(STRING),
                       duplicate_questions=arr(obj("id", "duplicate_of")), flagged_for_review=INT,
                       total_samples=INT))
def import_jsonl(body: ImportBody):
    records = _parse_import(body.content)
    svc = services()
    existing = svc.store.exists([r["id"] for r in records])
    fresh, duplicates, duplicate_questions, seen = [], [], [], set()
    for record in records:
        if record["id"] in existing or record["id"] in seen:
            duplicates.append(record["id"])
            continue
        admitted, rejection = svc.quality.admit(record, strict=False)
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
@operation("Add one sample", body=NewSample, response=ok("id", "total_samples", id=STRING, total_samples=INT),
           errors=(409,))
def add_sample(body: NewSample):
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
@operation("Random samples", query=RandomQuery, response=listing("samples", ref("Sample")))
def random_samples(query: RandomQuery):
    samples = services().store.random(query.count, {"difficulty": query.difficulty})
    return jsonify({"success": True, "samples": samples, "count": len(samples)})


@bp.get("/api/search")
@operation("Plain-text search (a substring, never a pattern)", query=SearchQuery,
           response=listing("results", ref("Sample"), "query", "field", query=STRING, field=STRING))
def search(query: SearchQuery):
    field = None if query.field == "all" else query.field
    results = services().store.search(query.q, field, query.limit)
    return jsonify({"success": True, "results": results, "count": len(results), "query": query.q,
                    "field": query.field})


@bp.get("/api/batch/<batch_id>/samples")
@operation("Samples of one batch", errors=(404,), response=listing(
    "samples", ref("Sample"), "batch_id", "batch_info", batch_id=STRING, batch_info=nullable(ref("HistoryRecord"))))
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
