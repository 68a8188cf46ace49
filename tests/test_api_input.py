"""Bad input: a clear 4xx JSON error naming the problem, and nothing changes."""
from __future__ import annotations

import json

import pytest

GOOD_GENERATE = {"practice_area": "Tort Law", "topic": "Nuisance", "difficulty": "basic"}


def assert_error(response, status: int, *words: str) -> None:
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True))
    body = response.get_json()
    assert body["success"] is False and isinstance(body["error"], str)
    for word in words:
        assert word in body["error"], body["error"]


def dataset_size(client) -> int:
    return int(client.get("/api/data").headers["X-Total-Count"])


@pytest.mark.parametrize("path", ["/api/generate", "/api/generate/batch/start", "/api/import/jsonl", "/api/add",
                                  "/api/samples/download"])
@pytest.mark.parametrize("kwargs, words", [
    ({"data": ""}, ["empty"]),
    ({"data": "not json{", "content_type": "application/json"}, ["not valid JSON"]),
    ({"data": "[1, 2]", "content_type": "application/json"}, ["JSON object", "list"]),
    ({"data": '"text"', "content_type": "application/json"}, ["JSON object"]),
    ({"data": "null", "content_type": "application/json"}, []),
])
def test_malformed_bodies(client, path, kwargs, words):
    assert_error(client.post(path, **kwargs), 400, *words)
    assert dataset_size(client) == 0


@pytest.mark.parametrize("body, words", [
    ({**GOOD_GENERATE, "topic": 42}, ["topic", "string"]),
    ({**GOOD_GENERATE, "topic": "Quantum Law"}, ["unknown topic", "Quantum Law"]),
    ({**GOOD_GENERATE, "practice_area": "Space Law"}, ["unknown topic", "Space Law"]),
    ({**GOOD_GENERATE, "difficulty": "legendary"}, ["unknown difficulty", "legendary"]),
    ({**GOOD_GENERATE, "provider": "nebula"}, ["unknown provider", "nebula"]),
    ({**GOOD_GENERATE, "provider": "groq", "model": "c-large"}, ["has no model", "c-large"]),
    ({**GOOD_GENERATE, "model": "gpt-9"}, ["unknown model", "gpt-9"]),
    ({**GOOD_GENERATE, "sample_type": "poem"}, ["unknown sample_type", "poem"]),
    ({**GOOD_GENERATE, "save": "yes"}, ["save"]),
    ({**GOOD_GENERATE, "reasoning_instruction": "x" * 5000}, ["reasoning_instruction"]),
    ({"practice_area": "Tort Law"}, ["topic", "required"]),
])
def test_generate_rejects_bad_fields(client, body, words, fake):
    assert_error(client.post("/api/generate", json=body), 400, *words)
    assert dataset_size(client) == 0 and len(fake.requests) == 0


@pytest.mark.parametrize("body, words", [
    ({"target_count": -5}, ["target_count"]),
    ({"target_count": 0}, ["target_count"]),
    ({"target_count": 10**12}, ["target_count"]),
    ({"target_count": "10"}, ["target_count"]),
    ({"target_count": 2.5}, ["target_count"]),
    ({"target_count": True}, ["target_count"]),
    ({}, ["target_count", "required"]),
    ({"target_count": 5, "topic": "Nuisance Law - Nope"}, ["unknown topic"]),
    ({"target_count": 5, "difficulty": "hard"}, ["unknown difficulty"]),
    ({"target_count": 5, "provider": "openai"}, ["unknown provider"]),
    ({"target_count": 5, "sample_type": "sonnet"}, ["unknown sample_type"]),
])
def test_batch_start_validates_everything_before_starting(client, body, words, fake):
    assert_error(client.post("/api/generate/batch/start", json=body), 400, *words)
    assert client.get("/api/generate/batch/history").get_json()["count"] == 0
    assert len(fake.requests) == 0


def test_batch_target_must_exceed_the_current_size(client):
    client.post("/api/add", json={"question": "What is consideration in English contract law?", "answer": "a",
                                  "reasoning": "Step 1: x", "case_citation": "", "topic": "Contract Law - Formation of Contracts",
                                  "difficulty": "basic"})
    assert_error(client.post("/api/generate/batch/start", json={"target_count": 1}), 400, "larger than", "(1)")


@pytest.mark.parametrize("content, words", [
    ('{"id": "a"}', ["line 1", "missing", "question"]),
    ('{"id": "a", "question": "q", "answer": "a", "topic": "T - t", "difficulty": "basic", '
     '"case_citation": "c", "reasoning": 5}', ["line 1", "reasoning"]),
    ('{"id": "a", "question": "q", "answer": "a", "topic": "T - t", "difficulty": "superhard", '
     '"case_citation": "c", "reasoning": "r"}', ["line 1", "difficulty"]),
    ('{"id": "a", "question": "q", "answer": "a", "topic": "T - t", "difficulty": "basic", "case_citation": "c", '
     '"reasoning": "r"}\n[1]', ["line 2", "JSON object"]),
    ('{"id": "a", "question": "q", "answer": "a", "topic": "T - t", "difficulty": "basic", "case_citation": "c", '
     '"reasoning": "r"}\n{broken', ["line 2", "not valid JSON"]),
    ("\n\n", ["content"]),
])
def test_import_names_the_bad_line_and_imports_nothing(client, content, words):
    assert_error(client.post("/api/import/jsonl", json={"content": content}), 400, *words)
    assert dataset_size(client) == 0


@pytest.mark.parametrize("extra, words", [
    ({"provider": {"name": "groq"}}, ["line 1", "provider"]),
    ({"prompt_tokens": 10**30}, ["line 1", "prompt_tokens"]),
    ({"question": "What is a trust \ud800 in English law?"}, ["line 1", "Unicode"]),
    ({"notes": ["\udfff"]}, ["line 1", "Unicode"]),
])
def test_import_refuses_what_the_store_cannot_hold(client, extra, words):
    line = {"id": "a", "question": "What is an easement in land law?", "answer": "A right.", "case_citation": "c",
            "topic": "Property Law - Mortgages", "difficulty": "basic", "reasoning": "Step 1: y", **extra}
    assert_error(client.post("/api/import/jsonl", json={"content": json.dumps(line)}), 400, *words)
    assert dataset_size(client) == 0


def test_import_requires_content_string(client):
    assert_error(client.post("/api/import/jsonl", json={"content": ["a"]}), 400, "content")
    assert_error(client.post("/api/import/jsonl", json={}), 400, "content")


def test_put_and_delete_bad_input(client):
    line = {"id": "s1", "question": "What is an easement in land law?", "answer": "A right.", "topic": "Property Law - Mortgages",
            "difficulty": "basic", "case_citation": "x", "reasoning": "Step 1: y"}
    client.post("/api/import/jsonl", json={"content": json.dumps(line)})
    assert_error(client.put("/api/sample/s1", json={"difficulty": "impossible"}), 400, "difficulty")
    assert_error(client.put("/api/sample/s1", json={"answer": 7}), 400, "answer")
    assert_error(client.put("/api/sample/s1", json={"id": "s2", "answer": "b"}), 400, "does not match")
    assert_error(client.put("/api/sample/s1", json={}), 400, "nothing to change")
    assert_error(client.put("/api/sample/missing", json={"answer": "b"}), 404, "missing")
    assert client.get("/api/sample/s1").get_json()["sample"]["answer"] == "A right."


@pytest.mark.parametrize("query, words", [
    ("/api/samples/random?count=-1", ["count"]), ("/api/samples/random?count=100000", ["count"]),
    ("/api/samples/random?count=abc", ["count"]), ("/api/samples/random?difficulty=x", ["difficulty"]),
    ("/api/search", ["q"]), ("/api/search?q=a&field=password", ["field"]), ("/api/search?q=a&limit=0", ["limit"]),
    ("/api/data?limit=-3", ["limit"]), ("/api/data?difficulty=nope", ["difficulty"]),
    ("/api/export?format=xlsx", ["format"]), ("/api/data?simulated=maybe", ["simulated"]),
])
def test_bad_query_parameters(client, query, words):
    assert_error(client.get(query), 400, *words)


def test_unknown_routes_and_methods_answer_json(client):
    assert_error(client.get("/api/nothing-here"), 404, "no such endpoint")
    assert_error(client.get("/favicon.ico"), 404)
    assert_error(client.delete("/api/topics"), 405, "method not allowed")
    assert_error(client.post("/api/stats"), 405)


def test_oversized_bodies_get_413(make_app):
    client = make_app(max_body_bytes=2048).test_client()
    assert_error(client.post("/api/import/jsonl", json={"content": "x" * 5000}), 413, "too large")
    assert dataset_size(client) == 0


def test_stop_of_unknown_batch(client):
    assert_error(client.post("/api/generate/batch/stop", json={"batch_id": "batch_1_ffffffff"}), 404, "no batch")
    assert_error(client.post("/api/generate/batch/stop", json={"batch_id": 3}), 400, "batch_id")
    assert client.post("/api/generate/batch/stop", json={}).get_json()["stopped_batch_ids"] == []
    assert client.post("/api/generate/batch/stop").get_json()["success"] is True  # empty body: stop all
