"""Dataset export as Parquet, JSON Lines or CSV, streamed where the format allows."""
from __future__ import annotations

from datetime import datetime, timezone

from flask import Blueprint, Response

from dataset.export import csv_chunks, jsonl_lines, parquet_bytes
from web.routes_data import filters_from_query
from web.services import services
from web.validation import query_choice

bp = Blueprint("export", __name__)

FORMATS = ("parquet", "jsonl", "csv")
MIME = {"parquet": "application/vnd.apache.parquet", "jsonl": "application/x-ndjson", "csv": "text/csv"}


@bp.get("/api/export")
def export():
    fmt = query_choice("format", FORMATS, "jsonl")
    filters = filters_from_query()
    svc = services()
    records = svc.store.iter_records(filters)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    if fmt == "parquet":
        response = Response(parquet_bytes(records), mimetype=MIME[fmt])
    else:
        response = Response(jsonl_lines(records) if fmt == "jsonl" else csv_chunks(records), mimetype=MIME[fmt])
    response.headers["Content-Disposition"] = f'attachment; filename="uk_law_dataset_{stamp}.{fmt}"'
    response.headers["X-Total-Count"] = str(svc.store.count(filters))
    return response
