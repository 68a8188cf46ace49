"""The dataset: browse, statistics, edit, import, download, search."""
from __future__ import annotations

import json
from typing import Any, Iterator

from flask import Blueprint, Response, jsonify, request

from generation.requests import RequestProblem, check_labels
from dataset.import_jobs import CANCELLED, COMPLETED, FAILED, QUEUED, RUNNING, JobFinished, ShuttingDown
from dataset.importing import Importer, LineError, check_line, numbered_lines
from dataset.stats import basic_stats, detailed_stats, token_stats
from storage.store import EDITABLE_FIELDS, DuplicateId, DuplicateQuestion, new_sample_id
from web.errors import ApiError
from web.operation import operation
from web.queries import DataQuery, ImportQuery, RandomQuery, SearchQuery
from web.schemas import BOOL, INT, NUMBER, OBJ, STRING, arr, listing, nullable, obj, ok, ref
from web.services import services
from web.validation import DownloadBody, ImportBody, NewSample, SampleFields

bp = Blueprint("data", __name__)

QUALITY_FIELDS = ("quality_score", "quality_flags", "duplicate_of", "quality")
TOTAL = {"X-Total-Count": "how many samples match the filters"}
ATTACHMENT = {"Content-Disposition": "attachment; filename=..."}
CHANGED = ok("message", "total_samples", message=STRING, total_samples=INT)


def _json_array(pieces: Iterator[bytes]) -> Iterator[bytes]:
    """One JSON array from `Store.iter_json`'s pieces (rows already encoded, joined by commas)."""
    yield b"["
    first = True
    for piece in pieces:
        yield piece if first else b"," + piece
        first = False
    yield b"]"


def _accepts_zstd(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header lists zstd (or *) without q=0."""
    for item in accept_encoding.split(","):
        name, _, params = item.strip().partition(";")
        if name.strip().lower() in ("zstd", "*"):
            quality = params.strip().lower().removeprefix("q=")
            try:
                return not params.strip() or float(quality) > 0
            except ValueError:
                return False
    return False


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


def _duplicate_question(exc: DuplicateQuestion) -> ApiError:
    """The 409 `_admitted` gives, for a duplicate the database's unique question key caught."""
    return ApiError(409, f"this question duplicates sample {exc.duplicate_of!r}", duplicate_of=exc.duplicate_of)


@bp.get("/api/data")
@operation("Samples as a bare array (the matching total in X-Total-Count)", query=DataQuery,
           response=arr(ref("Sample")), headers=TOTAL)
def data(query: DataQuery):
    svc = services()
    filters = query.filters()
    total = svc.store.count(filters)
    if not any(v not in (None, "") for v in filters.values()) and query.limit is None and not query.offset \
            and _accepts_zstd(request.headers.get("Accept-Encoding", "")):
        # the whole dataset, mostly compressed when written (flask-compress leaves an encoded answer alone)
        response = Response(svc.store.iter_json_zstd(), mimetype="application/json",
                            headers={"Content-Encoding": "zstd", "Vary": "Accept-Encoding"})
    else:
        rows = svc.store.iter_json(filters, limit=query.limit, offset=query.offset)
        response = Response(_json_array(rows), mimetype="application/json")
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
    except Exception as exc:
        svc.quality.forget(sample_id)   # the index goes back to the stored question
        if isinstance(exc, DuplicateQuestion):
            raise _duplicate_question(exc) from None
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


IMPORT_JOB = obj(
    "id", "status", "phase", "message", "lines_total", "lines_checked", "lines_done", "imported", "duplicates",
    "rejected", "errors", id=STRING, status={"type": "string", "enum": [QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED]},
    phase={"type": "string", "enum": ["queued", "checking", "importing", "done"]}, message=STRING,
    lines_total=INT, records_total=INT, lines_checked=INT, lines_done=INT, imported=INT, duplicates=INT,
    duplicate_ids=arr(STRING), duplicate_questions=INT, rejected=INT,
    rejections=arr(obj("line", "reason", line=INT, id=nullable(STRING), reason=STRING)), flagged_for_review=INT,
    errors=arr(obj("error", line=nullable(INT), error=STRING)), error_count=INT, skip_invalid=BOOL, chunk_rows=INT,
    cancel_requested=BOOL, created_at=STRING, started_at=nullable(STRING), finished_at=nullable(STRING),
    elapsed_seconds=NUMBER, rows_per_second=nullable(NUMBER))
IMPORT_JOB["description"] = ("A background import: lines are checked first (a bad line fails the job before anything "
                             "is stored, unless skip_invalid), then stored in chunks of chunk_rows, one transaction "
                             "each; a cancel or a shutdown takes effect between chunks and keeps what was stored.")
JOB_LOCATION = {"Location": "/api/import/jobs/<id>: where to follow the job"}


@bp.post("/api/import/jsonl")
@operation("Import samples from JSON lines; duplicates are skipped and listed", query=ImportQuery, body=ImportBody,
           errors=(409, 503), accepted_headers=JOB_LOCATION,
           description="Up to IMPORT_BACKGROUND_LINES lines (default 5,000) are imported in the request, all or "
                       "nothing: a bad line is a 400 naming the line and field. Larger imports, or any with "
                       "?background=true, answer 202 with a job to follow at GET /api/import/jobs/<id>.",
           response=ok("message", "imported", "total_samples", message=STRING, imported=INT, duplicates=arr(STRING),
                       duplicate_questions=arr(obj("id", "duplicate_of")), flagged_for_review=INT,
                       rejected=arr(obj("line", "reason")), total_samples=INT),
           accepted=ok("message", "job_id", "job", "total_samples", message=STRING, job_id=STRING, job=IMPORT_JOB,
                       total_samples=INT))
def import_jsonl(query: ImportQuery, body: ImportBody):
    svc = services()
    count = sum(1 for _ in numbered_lines(body.content))
    if count == 0:
        raise ApiError(400, "content has no records")
    if query.background or count > svc.settings.import_background_lines:
        try:
            job = svc.imports.submit(body.content, skip_invalid=query.skip_invalid)
        except ShuttingDown as exc:
            raise ApiError(503, str(exc), {"Retry-After": "30"}) from None
        location = f"/api/import/jobs/{job['id']}"
        response = jsonify({"success": True, "message": f"importing {count} line(s) in the background; follow it at "
                                                        f"{location}", "job_id": job["id"], "job": job,
                            "total_samples": svc.store.count()})
        response.status_code = 202
        response.headers["Location"] = location
        return response
    importer = Importer(svc.store, svc.quality, listed=None)
    checked = []
    for number, line in numbered_lines(body.content):
        try:
            checked.append((number, check_line(number, line)))
        except LineError as exc:
            if not query.skip_invalid:
                raise ApiError(400, str(exc)) from None
            importer.tally.reject(number, exc.sample_id, exc.problem)
    try:
        importer.store_chunk(checked)
    except DuplicateId:
        raise ApiError(409, "samples with these ids were being added meanwhile; retry the import") from None
    tally = importer.tally
    return jsonify({"success": True, "message": tally.message(), "imported": tally.imported,
                    "duplicates": tally.duplicates,
                    "duplicate_questions": [{"id": d["id"], "duplicate_of": d["duplicate_of"]}
                                            for d in tally.duplicate_questions],
                    "flagged_for_review": tally.flagged_for_review, "rejected": tally.rejected,
                    "total_samples": svc.store.count()})


@bp.get("/api/import/jobs")
@operation("Background imports kept in memory (the last 50 finished and any running), newest first",
           response=listing("jobs", IMPORT_JOB))
def import_jobs():
    jobs = services().imports.list()
    return jsonify({"success": True, "jobs": jobs, "count": len(jobs)})


@bp.get("/api/import/jobs/<job_id>")
@operation("Progress and outcome of a background import", response=ok("job", job=IMPORT_JOB), errors=(404,))
def import_job(job_id: str):
    job = services().imports.get(job_id)
    if job is None:
        raise ApiError(404, f"no import job {job_id!r} (jobs are kept in memory: a restart forgets them)")
    return jsonify({"success": True, "job": job})


@bp.delete("/api/import/jobs/<job_id>")
@operation("Cancel a background import: it stops after the chunk in hand; what was stored stays",
           response=ok("message", "job", message=STRING, job=IMPORT_JOB), errors=(404, 409))
def cancel_import_job(job_id: str):
    try:
        job = services().imports.cancel(job_id)
    except JobFinished as exc:
        raise ApiError(409, str(exc)) from None
    if job is None:
        raise ApiError(404, f"no import job {job_id!r}")
    message = "cancelled" if job["status"] == CANCELLED else "cancelling: it stops after the chunk in hand"
    return jsonify({"success": True, "message": f"import {job_id} {message}", "job": job})


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
        if isinstance(exc, DuplicateQuestion):   # stored meanwhile, by another request or server
            raise _duplicate_question(exc) from None
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
    info = svc.batches.history_record(batch_id)
    if not samples and info is None:
        raise ApiError(404, f"no batch with id {batch_id!r}")
    return jsonify({"success": True, "batch_id": batch_id, "samples": samples, "count": len(samples),
                    "batch_info": info})


def _safe_name(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)[:150] or "sample"
