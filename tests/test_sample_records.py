"""One schema for a stored sample, whichever way it comes in: generation, import, `POST /api/add`,
`PUT /api/sample/<id>`, and the store itself. A record breaking it is a 400 naming the field (and
the line, for an import) and nothing is stored; what one way refuses, every way refuses."""
from __future__ import annotations

import json

import pytest

from storage.records import (MAX_EXTRA_CHARS, MAX_EXTRA_DEPTH, MAX_EXTRA_FIELDS, MAX_ID, MAX_LABEL, MAX_TEXT,
                             MAX_TOPIC)
from storage.store import InvalidRecord

GOOD = {"id": "r1", "question": "What makes a covenant run with freehold land?", "answer": "Only negative ones.",
        "topic": "Property Law - Easements and Covenants", "difficulty": "basic",
        "case_citation": "Tulk v Moxhay (1848) 2 Ph 774", "reasoning": "Step 1: equity. Step 2: the burden."}
STATS = ("/api/stats", "/api/stats/detailed", "/api/stats/tokens", "/api/stats/quality")
EXPORTS = ("jsonl", "csv", "parquet")


def line(**fields) -> str:
    return json.dumps({**GOOD, **fields})


def assert_refused(response, *words: str) -> str:
    assert response.status_code == 400, (response.status_code, response.get_data(as_text=True)[:500])
    body = response.get_json()
    assert body["success"] is False
    for word in words:
        assert word in body["error"], body["error"][:500]
    return body["error"]


def size(client) -> int:
    return int(client.get("/api/data").headers["X-Total-Count"])


def assert_everything_answers(client) -> None:
    for path in STATS:
        assert client.get(path).status_code == 200, path
    for fmt in EXPORTS:
        response = client.get(f"/api/export?format={fmt}")
        assert response.status_code == 200, fmt
        response.get_data()   # streamed formats fail while streaming, if at all


# Every metadata column with a value of the wrong type or out of range.
WRONG_METADATA = [
    ("prompt_tokens", "abc"), ("prompt_tokens", -1), ("prompt_tokens", 1.5), ("prompt_tokens", True),
    ("prompt_tokens", 10**30), ("completion_tokens", "12"), ("completion_tokens", [1]), ("attempts", {"n": 1}),
    ("attempts", -3), ("latency", "fast"), ("latency", -0.5), ("latency", True), ("simulated", "yes"),
    ("simulated", 1), ("quality_score", "high"), ("quality_score", 7), ("quality_flags", "short"),
    ("quality_flags", [1, 2]), ("quality_flags", {"a": 1}), ("duplicate_of", 5), ("duplicate_of", ""),
    ("created_at", "yesterday"), ("created_at", 1700000000), ("updated_at", "2024-13-45T00:00:00"),
    ("provider", {"name": "groq"}), ("model", ["m"]), ("batch_id", 7), ("sample_type", 3),
]


@pytest.mark.parametrize("field, value", WRONG_METADATA, ids=[f"{f}={v!r}"[:40] for f, v in WRONG_METADATA])
def test_import_refuses_wrongly_typed_metadata_naming_line_and_field(client, field, value):
    content = "\n".join([line(id="ok1"), line(id="bad", **{field: value})])
    assert_refused(client.post("/api/import/jsonl", json={"content": content}), "line 2", field)
    assert size(client) == 0
    assert_everything_answers(client)


def test_the_reported_line_no_longer_breaks_statistics_or_exports(client):
    """`"prompt_tokens": "abc"` used to be stored; every statistic and the Parquet export then answered 500."""
    assert_refused(client.post("/api/import/jsonl", json={"content": line(prompt_tokens="abc")}),
                   "line 1", "prompt_tokens", "integer")
    assert client.post("/api/import/jsonl", json={"content": line(prompt_tokens=12, completion_tokens=30,
                                                                  latency=1.25, attempts=2)}).status_code == 200
    assert client.get("/api/stats/tokens").get_json()["stats"]["reported_usage"]["prompt_tokens"] == 12
    assert_everything_answers(client)


# (field, value) every way in must refuse: over the length limit, blank where text is required.
LIMITS = [
    ("id", "i" * (MAX_ID + 1)), ("question", "q" * (MAX_TEXT + 1)), ("answer", "a" * (MAX_TEXT + 1)),
    ("reasoning", "r" * (MAX_TEXT + 1)), ("case_citation", "c" * (MAX_TEXT + 1)), ("topic", "t" * (MAX_TOPIC + 1)),
    ("difficulty", "d" * (MAX_LABEL + 1)), ("sample_type", "s" * (MAX_LABEL + 1)), ("question", "   "),
    ("answer", ""), ("reasoning", " "), ("topic", ""), ("question", "What is a trust \ud800?"),
    ("answer", "Equity\x00 follows the law."), ("case_citation", "\x00"),   # NUL: PostgreSQL's text cannot hold it
]


@pytest.mark.parametrize("field, value", LIMITS, ids=[f"{f}-{len(v)}" for f, v in LIMITS])
def test_import_add_and_put_refuse_the_same_values(client, field, value):
    assert client.post("/api/add", json={**GOOD, "id": "kept"}).status_code == 200
    put_fields = {field: value} if field != "id" else {"answer": "changed", "id": value}
    assert_refused(client.put("/api/sample/kept", json=put_fields), field)
    assert_refused(client.post("/api/add", json={**GOOD, field: value}), field)
    assert_refused(client.post("/api/import/jsonl", json={"content": line(**{field: value})}), "line 1", field)
    assert size(client) == 1
    assert client.get("/api/sample/kept").get_json()["sample"]["answer"] == GOOD["answer"]


@pytest.mark.parametrize("field, limit", [("id", MAX_ID), ("question", MAX_TEXT), ("topic", MAX_TOPIC)])
def test_values_at_the_limit_are_accepted_by_every_way_in(client, field, limit):
    value = "x" * (limit - 1) + "?"
    assert client.post("/api/add", json={**GOOD, "id": "a1", field: value}).status_code == 200
    content = line(**{"id": "i1", "question": "Another question about covenants and land?", field: value})
    assert client.post("/api/import/jsonl", json={"content": content}).status_code == 200
    if field != "id":
        assert client.put("/api/sample/a1", json={field: value[::-1]}).status_code == 200


def test_import_refuses_a_ten_megabyte_question_and_a_ten_thousand_character_id(client):
    assert_refused(client.post("/api/import/jsonl", json={"content": line(question="q" * 10_000_000)}),
                   "line 1", "question", str(MAX_TEXT))
    assert_refused(client.post("/api/import/jsonl", json={"content": line(id="x" * 10_000)}), "line 1", "id")
    assert size(client) == 0


@pytest.mark.parametrize("extra, words", [
    ({"notes": json.loads("[" * (MAX_EXTRA_DEPTH + 1) + "]" * (MAX_EXTRA_DEPTH + 1))}, ["notes", "nested"]),
    ({f"col{i}": i for i in range(MAX_EXTRA_FIELDS + 1)}, ["extra fields"]),
    ({"notes": "n" * (MAX_EXTRA_CHARS + 10)}, ["characters of JSON"]),
    ({"x" * 101: 1}, ["field name"]),
    ({"score": 10**40}, ["score", "64 bits"]),
])
def test_extra_fields_are_bounded(client, extra, words):
    assert_refused(client.post("/api/import/jsonl", json={"content": line(**extra)}), "line 1", *words)
    assert size(client) == 0


@pytest.mark.parametrize("text, field", [
    ('"latency": NaN', "latency"), ('"quality_score": Infinity', "quality_score"), ('"notes": [NaN]', "notes"),
    ('"meta": {"x": -Infinity}', "meta"),
])
def test_non_finite_numbers_python_would_parse_are_refused(client, text, field):
    content = line()[:-1] + ", " + text + "}"
    assert_refused(client.post("/api/import/jsonl", json={"content": content}), "line 1", field, "finite")
    assert size(client) == 0


def test_extra_fields_within_bounds_are_kept(client):
    extra = {"source": "court notes", "tags": ["lease", "covenant"], "meta": {"page": 3, "score": 0.5, "ok": True}}
    assert client.post("/api/import/jsonl", json={"content": line(**extra)}).status_code == 200
    sample = client.get("/api/sample/r1").get_json()["sample"]
    assert {k: sample[k] for k in extra} == extra


def test_a_line_holding_u2028_is_one_line(client):
    raw = [{**GOOD, "id": "a", "answer": "First part.\u2028Second part."}, {**GOOD, "id": "b", "question": "Why?\u2029"}]
    content = "\n".join(json.dumps(item, ensure_ascii=False) for item in raw)   # the separators unescaped
    assert "\u2028" in content
    response = client.post("/api/import/jsonl", data=json.dumps({"content": content}, ensure_ascii=False),
                           content_type="application/json")
    assert response.status_code == 200, response.get_json()
    assert client.get("/api/sample/a").get_json()["sample"]["answer"] == "First part.\u2028Second part."


def test_the_store_checks_every_write_itself(make_store):
    store = make_store("s.sqlite3")
    store.add(GOOD)
    with pytest.raises(InvalidRecord, match="prompt_tokens"):
        store.add({**GOOD, "id": "r2", "prompt_tokens": "abc"})
    with pytest.raises(InvalidRecord, match=r"record 2 \('r3'\): question"):
        store.add_many([{**GOOD, "id": "r4", "question": "Fine?"}, {**GOOD, "id": "r3", "question": 5}])
    with pytest.raises(InvalidRecord, match="latency"):
        store.update("r1", {"latency": float("inf")})
    with pytest.raises(InvalidRecord, match="notes"):
        store.update("r1", {"notes": {"deep": object()}})
    assert store.count() == 1 and store.get("r1")["answer"] == GOOD["answer"]
    assert store.get("r1").get("latency") is None
    store.close()


def test_generated_samples_pass_the_same_checks(client):
    response = client.post("/api/generate", json={"practice_area": "Tort Law", "topic": "Nuisance",
                                                  "difficulty": "basic"})
    assert response.status_code == 200, response.get_json()
    sample = response.get_json()["sample"]
    assert isinstance(sample["prompt_tokens"], int) and isinstance(sample["latency"], float)
    assert isinstance(sample["quality"], dict)
    assert_everything_answers(client)
