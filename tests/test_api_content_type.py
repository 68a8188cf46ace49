"""A request body is read only when it is declared JSON: anything else a browser could send
cross-site without a CORS preflight (text/plain, a form, no type at all) is a 415 and changes nothing."""
from __future__ import annotations

import json

import pytest

from web.operation import declared

SAMPLE = {"id": "t1", "question": "What is a nuisance in English tort law?", "answer": "An unlawful interference.",
          "topic": "Tort Law - Nuisance", "difficulty": "basic", "case_citation": "Hunter v Canary Wharf [1997] AC 655",
          "reasoning": "Step 1: identify the interest in land."}
OTHER = {**SAMPLE, "id": "t2", "question": "What is the rule in Rylands v Fletcher?"}
WRITES = [
    ("/api/generate/batch/start", {"target_count": 1_000_000}),
    ("/api/import/jsonl", {"content": json.dumps(SAMPLE)}),
    ("/api/add", OTHER),
]
# What a page on another origin can send without a preflight, and what else is not JSON.
NOT_JSON = [
    pytest.param(lambda body: {"data": json.dumps(body), "content_type": "text/plain"}, id="text-plain"),
    pytest.param(lambda body: {"data": json.dumps(body), "content_type": "text/plain;charset=UTF-8"},
                 id="text-plain-charset"),
    pytest.param(lambda body: {"data": {k: v if isinstance(v, str) else json.dumps(v) for k, v in body.items()}},
                 id="form-urlencoded"),
    pytest.param(lambda body: {"data": {k: str(v) for k, v in body.items()}, "content_type": "multipart/form-data"},
                 id="multipart"),
    pytest.param(lambda body: {"data": json.dumps(body)}, id="no-content-type"),
]


def dataset_size(client) -> int:
    return int(client.get("/api/data").headers["X-Total-Count"])


def batch_count(client) -> int:
    return client.get("/api/generate/batch/history").get_json()["count"]


@pytest.mark.parametrize("path, body", WRITES)
@pytest.mark.parametrize("encode", NOT_JSON)
def test_writes_not_declared_json_are_415_and_change_nothing(client, fake, path, body, encode):
    # From a foreign page the Origin check answers 403 first (tests/test_api_origin.py); from an
    # allowed page, or a client that sends no Origin, an undeclared body is still refused.
    foreign = client.post(path, headers={"Origin": "http://evil.example"}, **encode(body))
    assert foreign.status_code == 403, foreign.get_data(as_text=True)
    response = client.post(path, headers={"Origin": "http://localhost:5173"}, **encode(body))
    assert response.status_code == 415, response.get_data(as_text=True)
    error = response.get_json()
    assert error["success"] is False and "application/json" in error["error"]
    assert dataset_size(client) == 0 and batch_count(client) == 0 and len(fake.requests) == 0


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8",
                                          "Application/JSON;charset=UTF-8"])
def test_the_same_writes_declared_json_work(client, fake, content_type):
    for path, body in reversed(WRITES):   # the rows first, then the batch
        response = client.post(path, data=json.dumps(body), content_type=content_type)
        assert response.status_code == 200, (path, response.get_data(as_text=True))
    assert dataset_size(client) >= 2 and batch_count(client) == 1
    client.post("/api/generate/batch/stop", json={})


def test_every_endpoint_with_a_body_refuses_a_form(make_app):
    app = make_app(start_batches=False)
    client = app.test_client()
    checked = []
    for rule in app.url_map.iter_rules():
        op = declared(app.view_functions[rule.endpoint])
        if op is None or op.body is None:
            continue
        path = rule.rule.replace("<sample_id>", "t1")
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            response = client.open(path, method=method, data={"target_count": "5", "content": "x"})
            assert response.status_code == 415, (method, path, response.status_code)
            checked.append(f"{method} {path}")
    assert {"POST /api/generate", "POST /api/generate/batch/start", "POST /api/generate/batch/stop",
            "POST /api/import/jsonl", "POST /api/add", "PUT /api/sample/t1", "POST /api/samples/download",
            "POST /api/huggingface/push"} <= set(checked)
    assert dataset_size(client) == 0 and batch_count(client) == 0


def test_writes_without_a_body_are_unaffected(client):
    client.post("/api/add", json=SAMPLE)
    assert client.post("/api/generate/batch/stop").status_code == 200                  # no body, no type
    assert client.post("/api/generate/batch/stop", content_type="text/plain").status_code == 200   # empty
    assert client.delete("/api/sample/t1").status_code == 200
    assert dataset_size(client) == 0


def test_the_openapi_document_lists_415_for_every_body(client):
    document = client.get("/api/openapi.json").get_json()
    with_body = [(path, method, op) for path, ops in document["paths"].items() for method, op in ops.items()
                 if "requestBody" in op]
    assert len(with_body) >= 8
    for path, method, op in with_body:
        assert "415" in op["responses"], (method, path)
        assert op["responses"]["415"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    assert "415" not in document["paths"]["/api/sample/{sample_id}"]["delete"]["responses"]
