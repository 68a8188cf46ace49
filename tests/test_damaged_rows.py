"""Rows an older version stored with values of the wrong type: statistics, listings and exports
still answer (the values repaired on the way out), the start-up warm-up still builds the
duplicate index, and the damaged rows are reported by id, not fatal.

The rows are written straight into SQLite, bypassing the store's checks, as an older release did."""
from __future__ import annotations

import csv
import io
import json
import logging
import sqlite3

import polars as pl
import pytest

from tests.conftest import wait_for

pytestmark = pytest.mark.sqlite_only   # the SQLite file itself; PostgreSQL's own tests: test_postgres.py

STATS = ("/api/stats", "/api/stats/detailed", "/api/stats/tokens", "/api/stats/quality")
GOOD = {"question": "What is the rule in Rylands v Fletcher?", "answer": "Strict liability for escapes.",
        "topic": "Tort Law - Nuisance", "difficulty": "advanced", "case_citation": "Rylands v Fletcher (1868) LR 3 HL 330",
        "reasoning": "Step 1: non-natural use. Step 2: escape."}

# (id, column values an older version could have left): one broken column or several per row.
DAMAGED = [
    ("bad_tokens", {"prompt_tokens": "abc", "completion_tokens": "lots"}),
    ("bad_numbers", {"latency": "slow", "quality_score": "high", "attempts": 2.5}),
    ("bad_infinity", {"latency": float("inf"), "completion_tokens": -40}),
    ("bad_flags", {"quality_flags": "not json", "simulated": "yes"}),
    ("bad_flag_items", {"quality_flags": '[1, {"x": 2}, "near_duplicate"]'}),
    ("bad_flag_shape", {"quality_flags": '{"a": 1}'}),
    ("bad_extra", {"extra": "{broken"}),
    ("bad_extra_shape", {"extra": "[1, 2]"}),
    ("bad_blobs", {"question": b"What is \xff a blob?", "topic": b"Tort Law - Nuisance", "provider": b"groq"}),
]
DAMAGED_FIELDS = {
    "bad_tokens": ["prompt_tokens", "completion_tokens"], "bad_numbers": ["attempts", "latency", "quality_score"],
    "bad_infinity": ["completion_tokens", "latency"], "bad_flags": ["simulated", "quality_flags"],
    "bad_flag_items": ["quality_flags"], "bad_flag_shape": ["quality_flags"], "bad_extra": ["extra"],
    "bad_extra_shape": ["extra"], "bad_blobs": ["question", "topic", "provider"],
}


def write_rows_directly(path, rows) -> None:
    db = sqlite3.connect(path)
    with db:
        for sample_id, columns in rows:
            values = {"id": sample_id, **GOOD, "question": f"{GOOD['question']} ({sample_id})",
                      "created_at": "2024-01-01T00:00:00+00:00", "updated_at": "2024-01-01T00:00:00+00:00",
                      "simulated": 0, **columns}
            names = ", ".join(values)
            db.execute(f"INSERT INTO samples ({names}) VALUES ({', '.join('?' for _ in values)})", list(values.values()))
    db.close()


@pytest.fixture
def restarted(make_app, tmp_path, caplog):
    """An app whose data directory holds two good samples and the damaged rows, started afresh."""
    data_dir = tmp_path / "old"
    first = make_app(data_dir=data_dir)
    client = first.test_client()
    for n in range(2):
        assert client.post("/api/add", json={**GOOD, "id": f"good{n}", "question": f"{GOOD['question']} #{n}",
                                             "provider": "groq", "model": "g-large"}).status_code == 200
    services = first.extensions["services"]
    path = services.settings.database_path
    services.close()
    write_rows_directly(path, DAMAGED)
    caplog.set_level(logging.WARNING)
    app = make_app(data_dir=data_dir)
    services = app.extensions["services"]
    wait_for(lambda: not services.warm_up.is_alive())
    return app


def test_the_warm_up_builds_the_duplicate_index_despite_damaged_rows(restarted, caplog):
    services = restarted.extensions["services"]
    assert services.quality.wait_ready(timeout=0), "the duplicate index was never built"
    assert len(services.quality.index) == 2 + len(DAMAGED)
    response = restarted.test_client().post("/api/generate", json={"practice_area": "Tort Law", "topic": "Nuisance",
                                                                  "difficulty": "basic"})
    assert response.status_code == 200, response.get_json()
    warnings = [r.getMessage() for r in caplog.get_records("setup") if "values of the wrong type" in r.getMessage()]
    assert warnings and "'bad_tokens'" in warnings[0] and str(len(DAMAGED)) in warnings[0]


def test_every_statistic_answers_and_counts_every_row(restarted):
    client = restarted.test_client()
    for path in STATS:
        response = client.get(path)
        assert response.status_code == 200, (path, response.get_data(as_text=True)[:300])
    total = 2 + len(DAMAGED)
    assert client.get("/api/stats").get_json()["total"] == total
    assert client.get("/api/stats/detailed").get_json()["stats"]["total_samples"] == total
    tokens = client.get("/api/stats/tokens").get_json()["stats"]
    assert tokens["total_samples"] == total and tokens["total_tokens"] > 0
    assert tokens["reported_usage"]["prompt_tokens"] == 0   # "abc" is no count: left out, not a crash
    quality = client.get("/api/stats/quality").get_json()["stats"]
    assert quality["total_samples"] == total


def test_damaged_rows_are_reported_by_id_and_field(restarted):
    client = restarted.test_client()
    report = client.get("/api/stats/quality").get_json()["stats"]["damaged_rows"]
    assert report["count"] == len(DAMAGED)
    assert {s["id"]: sorted(s["fields"]) for s in report["samples"]} == {
        sample_id: sorted(fields) for sample_id, fields in DAMAGED_FIELDS.items()}
    assert report["fields"]["quality_flags"] == 3 and report["fields"]["extra"] == 2
    health = client.get("/api/health").get_json()
    assert health["damaged_rows"] == len(DAMAGED) and health["status"] == "ok"
    assert any("wrong type" in problem for problem in health["problems"])


def test_listings_return_repaired_values(restarted):
    client = restarted.test_client()
    response = client.get("/api/data")
    assert response.status_code == 200
    records = {r["id"]: r for r in json.loads(response.get_data(as_text=True))}   # strict JSON: no NaN/Infinity
    assert records["bad_tokens"]["prompt_tokens"] is None and records["bad_tokens"]["completion_tokens"] is None
    assert records["bad_infinity"]["latency"] is None and records["bad_numbers"]["attempts"] is None
    assert records["bad_flags"]["quality_flags"] == [] and records["bad_flags"]["simulated"] is False
    assert records["bad_flag_items"]["quality_flags"] == ["near_duplicate"]
    assert records["bad_blobs"]["question"] == "What is \ufffd a blob?" and records["bad_blobs"]["provider"] == "groq"
    for sample_id, _ in DAMAGED:
        assert client.get(f"/api/sample/{sample_id}").status_code == 200
        assert client.get(f"/api/sample/{sample_id}/download").status_code == 200
    assert client.get("/api/search?q=Rylands").get_json()["count"] == 2 + len(DAMAGED)
    assert client.get("/api/samples/random?count=20").get_json()["count"] == 2 + len(DAMAGED)


def test_every_export_format_holds_every_row(restarted):
    client = restarted.test_client()
    total = 2 + len(DAMAGED)
    jsonl = client.get("/api/export?format=jsonl")
    assert jsonl.status_code == 200
    lines = [json.loads(line) for line in jsonl.get_data(as_text=True).splitlines()]
    assert len(lines) == total
    csv_response = client.get("/api/export?format=csv")
    assert csv_response.status_code == 200
    assert len(list(csv.DictReader(io.StringIO(csv_response.get_data(as_text=True))))) == total
    parquet = client.get("/api/export?format=parquet")
    assert parquet.status_code == 200
    frame = pl.read_parquet(io.BytesIO(parquet.data))
    assert frame.height == total and frame["prompt_tokens"].null_count() >= 1


def test_editing_a_damaged_row_repairs_it(restarted):
    client = restarted.test_client()
    assert client.put("/api/sample/bad_tokens", json={"answer": "Liability without fault."}).status_code == 200
    sample = client.get("/api/sample/bad_tokens").get_json()["sample"]
    assert sample["answer"] == "Liability without fault." and sample["prompt_tokens"] is None
    assert client.delete("/api/sample/bad_extra").status_code == 200
    report = client.get("/api/stats/quality").get_json()["stats"]["damaged_rows"]
    assert report["count"] == len(DAMAGED) - 2
    assert {"bad_tokens", "bad_extra"}.isdisjoint(s["id"] for s in report["samples"])
    assert client.get("/api/health").get_json()["damaged_rows"] == len(DAMAGED) - 2


def test_an_edit_keeps_what_an_older_version_stored_too_long(make_app, tmp_path):
    """Rows stored before the limits existed stay editable: an edit is judged on what it changes."""
    data_dir = tmp_path / "long"
    first = make_app(data_dir=data_dir)
    path = first.extensions["services"].settings.database_path
    first.extensions["services"].close()
    long_id, long_question = "x" * 1000, "Why? " * 20_000
    write_rows_directly(path, [(long_id, {"question": long_question})])
    client = make_app(data_dir=data_dir).test_client()
    assert client.put(f"/api/sample/{long_id}", json={"answer": "Edited."}).status_code == 200
    sample = client.get(f"/api/sample/{long_id}").get_json()["sample"]
    assert sample["answer"] == "Edited." and sample["question"] == long_question
    response = client.put(f"/api/sample/{long_id}", json={"question": "q" * 60_000})
    assert response.status_code == 400 and "question" in response.get_json()["error"]
