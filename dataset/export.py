"""The dataset as Parquet, JSON Lines or CSV: one definition of the exported columns, shared by
`GET /api/export` (streamed) and publishing to the Hugging Face Hub.

CSV cells that a spreadsheet would run as a formula are prefixed with `'` (OWASP's rule); JSON
Lines and Parquet carry the text exactly as stored."""
from __future__ import annotations

import csv
import io
import json
from typing import Any, Iterator

import polars as pl

from dataset.stats import RECORD_COLUMNS

EXPORT_SCHEMA: dict[str, Any] = {
    **{c: pl.Utf8 for c in RECORD_COLUMNS},
    "prompt_tokens": pl.Int64, "completion_tokens": pl.Int64, "latency": pl.Float64, "attempts": pl.Int64,
    "simulated": pl.Boolean, "quality_score": pl.Float64, "quality_flags": pl.List(pl.Utf8), "duplicate_of": pl.Utf8,
}


def export_row(record: dict[str, Any]) -> dict[str, Any]:
    return {c: record.get(c) for c in RECORD_COLUMNS}


def jsonl_lines(records: Iterator[dict[str, Any]]) -> Iterator[str]:
    for record in records:
        yield json.dumps(export_row(record), ensure_ascii=False) + "\n"


# A spreadsheet runs a cell that starts with one of these as a formula (OWASP "CSV injection").
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value: Any) -> Any:
    """A text cell a spreadsheet will show, not run: prefixed with `'` if it could start a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_TRIGGERS):
        return "'" + value
    return value


def csv_chunks(records: Iterator[dict[str, Any]]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=RECORD_COLUMNS)
    writer.writeheader()
    for number, record in enumerate(records, 1):
        row = export_row(record)
        row["quality_flags"] = ";".join(row.get("quality_flags") or [])
        writer.writerow({column: neutralise(value) for column, value in row.items()})
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


def export_bytes(records: Iterator[dict[str, Any]], fmt: str) -> bytes:
    """The whole export in one piece: `fmt` is parquet, jsonl or csv."""
    if fmt == "parquet":
        return parquet_bytes(records)
    chunks = jsonl_lines(records) if fmt == "jsonl" else csv_chunks(records)
    return "".join(chunks).encode()
