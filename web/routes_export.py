"""Dataset export as Parquet, JSON Lines or CSV, streamed where the format allows."""
from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timezone
from typing import Any, Iterator

import polars as pl
from flask import Blueprint, Response

from stats import RECORD_COLUMNS
from web.routes_data import filters_from_query
from web.services import services
from web.validation import query_choice

bp = Blueprint("export", __name__)

FORMATS = ("parquet", "jsonl", "csv")
MIME = {"parquet": "application/vnd.apache.parquet", "jsonl": "application/x-ndjson", "csv": "text/csv"}
EXPORT_SCHEMA: dict[str, Any] = {
    **{c: pl.Utf8 for c in RECORD_COLUMNS},
    "prompt_tokens": pl.Int64, "completion_tokens": pl.Int64, "latency": pl.Float64, "attempts": pl.Int64,
    "simulated": pl.Boolean, "quality_score": pl.Float64, "quality_flags": pl.List(pl.Utf8), "duplicate_of": pl.Utf8,
}


def export_row(record: dict[str, Any]) -> dict[str, Any]:
    return {c: record.get(c) for c in RECORD_COLUMNS}


def _jsonl(records: Iterator[dict[str, Any]]) -> Iterator[str]:
    for record in records:
        yield json.dumps(export_row(record), ensure_ascii=False) + "\n"


def _csv(records: Iterator[dict[str, Any]]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=RECORD_COLUMNS)
    writer.writeheader()
    for number, record in enumerate(records, 1):
        row = export_row(record)
        row["quality_flags"] = ";".join(row.get("quality_flags") or [])
        writer.writerow(row)
        if number % 500 == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def parquet_bytes(records: Iterator[dict[str, Any]]) -> bytes:
    frame = pl.DataFrame([export_row(r) for r in records], schema=EXPORT_SCHEMA, orient="row")
    out = io.BytesIO()
    frame.write_parquet(out)
    return out.getvalue()


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
        response = Response(_jsonl(records) if fmt == "jsonl" else _csv(records), mimetype=MIME[fmt])
    response.headers["Content-Disposition"] = f'attachment; filename="uk_law_dataset_{stamp}.{fmt}"'
    response.headers["X-Total-Count"] = str(svc.store.count(filters))
    return response
