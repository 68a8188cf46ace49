"""Dataset export as Parquet, JSON Lines or CSV, streamed where the format allows."""
from __future__ import annotations

from datetime import datetime, timezone

from flask import Blueprint, Response

from dataset.export import csv_chunks, jsonl_lines, parquet_bytes
from web.operation import operation
from web.queries import ExportQuery
from web.schemas import BINARY
from web.services import services

bp = Blueprint("export", __name__)

MIME = {"parquet": "application/vnd.apache.parquet", "jsonl": "application/x-ndjson", "csv": "text/csv"}


@bp.get("/api/export")
@operation("The dataset (or the samples matching the filters) as a Parquet, JSON Lines or CSV attachment",
           query=ExportQuery, response=BINARY, media=tuple(MIME.values()),
           headers={"Content-Disposition": "attachment; filename=uk_law_dataset_<time>.<format>",
                    "X-Total-Count": "how many samples the file holds"})
def export(query: ExportQuery):
    fmt = query.format
    filters = query.filters()
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
