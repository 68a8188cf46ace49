"""Dataset quality figures and publishing to the Hugging Face Hub."""
from __future__ import annotations

from flask import Blueprint, jsonify

from dataset.publishing import FORMATS, PublishError, push_to_hub
from quality.service import checks_applied
from quality.stats import quality_stats
from web.errors import ApiError
from web.operation import operation
from web.queries import FilterQuery
from web.schemas import INT, OBJ, STRING, arr, obj, ok
from web.services import services
from web.validation import HuggingFacePushBody

bp = Blueprint("quality", __name__)
DAMAGED_LISTED = 100
DAMAGED_ROWS = obj("count", "fields", "samples", count=INT, fields=OBJ,
                   samples=arr(obj("id", "fields", id=STRING, fields=arr(STRING))))
DAMAGED_ROWS["description"] = ("stored rows holding values of the wrong type (written by older versions): "
                               "repaired when read; editing one rewrites it. The first 100 are listed.")


@bp.get("/api/stats/quality")
@operation("Quality flags, rejection reasons, duplicate clusters, coverage gaps, damaged rows",
           response=ok("stats", stats=obj("damaged_rows", damaged_rows=DAMAGED_ROWS)))
def stats_quality():
    svc = services()
    stats = dict(svc.stats.cached("quality", quality_stats))
    stats["rejection_reasons"] = {  # outside the cache: rejected samples never reach the store
        "batch_attempts": svc.batches.repo.rejection_counts(),
        "since_start": dict(svc.quality.rejections)}
    stats["damaged_rows"] = svc.store.damaged_rows(limit=DAMAGED_LISTED)   # cached by the store until it changes
    return jsonify({"success": True, "stats": stats})


@bp.post("/api/huggingface/push")
@operation("Publish the dataset (or the samples matching the filters) to the Hub with a generated card",
           query=FilterQuery, body=HuggingFacePushBody, body_required=False, errors=(502,),
           response=ok("message", "repo_url", message=STRING, repo_url=STRING))
def huggingface_push(query: FilterQuery, body: HuggingFacePushBody):
    svc = services()
    fmt = body.format or "parquet"
    if fmt not in FORMATS:
        raise ApiError(400, f"format must be one of {', '.join(sorted(set(FORMATS)))}; got {fmt!r}")
    token = body.token or svc.settings.env.get("HF_TOKEN", "").strip()
    if not token:
        raise ApiError(400, "no Hugging Face token: send one as 'token' or set HF_TOKEN")
    if body.repo_name is not None and not body.repo_name.strip():
        raise ApiError(400, "repo_name must not be empty")
    filters = query.filters()
    if svc.store.count(filters) == 0:
        raise ApiError(400, "the dataset is empty: nothing to publish")
    try:
        url = push_to_hub(records=svc.store.iter_records(filters), frame=svc.stats.frame(), token=token,
                          repo_name=body.repo_name, fmt=fmt, private=body.private,
                          endpoint=svc.settings.hf_endpoint, quality_checks=checks_applied())
    except PublishError as exc:
        raise ApiError(exc.status, str(exc)) from None
    return jsonify({"success": True, "message": f"published {svc.store.count(filters)} samples", "repo_url": url})

