"""The OpenAPI document is generated from the routes' declarations: nothing the server serves is
missing from it, and a query parameter it lists is the one the route validates."""
from __future__ import annotations

import pytest

from web.openapi import build


def served(app) -> set[tuple[str, str]]:
    """(OpenAPI path, method) of every API rule the app serves."""
    out = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/") or rule.rule == "/metrics":
            path = rule.rule.replace("<", "{").replace(">", "}")
            out |= {(path, method.lower()) for method in rule.methods - {"HEAD", "OPTIONS"}}
    return out


def query_parameters(document: dict, path: str, method: str = "get") -> dict[str, dict]:
    return {p["name"]: p for p in document["paths"][path][method]["parameters"] if p["in"] == "query"}


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def document(app) -> dict:
    return app.test_client().get("/api/openapi.json").get_json()


def test_every_route_has_an_operation(app, document):
    described = {(path, method) for path, operations in document["paths"].items() for method in operations}
    missing = served(app) - described
    assert not missing, f"routes without an @operation declaration: {sorted(missing)}"
    assert {("/metrics", "get"), ("/api/generate/batch/stream", "get"), ("/api/export", "get"),
            ("/api/import/jsonl", "post"), ("/api/huggingface/push", "post")} <= described


def test_an_undeclared_route_is_caught(app):
    @app.get("/api/undeclared")
    def undeclared():
        return {}

    described = {(path, method) for path, operations in build(app)["paths"].items() for method in operations}
    assert served(app) - described == {("/api/undeclared", "get")}


def test_the_data_filters_are_described(document):
    params = query_parameters(document, "/api/data")
    assert {"limit", "offset", "topic", "practice_area", "difficulty", "sample_type", "provider", "model", "batch_id",
            "flag", "without_flag", "clean", "min_score", "simulated"} <= set(params)
    assert params["min_score"]["schema"] == {"type": "number", "minimum": 0, "maximum": 1}
    assert params["clean"]["schema"]["type"] == "boolean"
    assert "us_law" in params["without_flag"]["schema"]["enum"]
    assert params["difficulty"]["schema"]["enum"] == ["foundational", "basic", "intermediate", "advanced", "expert"]
    assert not any(p["required"] for p in params.values())
    for path, method in (("/api/export", "get"), ("/api/huggingface/push", "post")):
        assert set(params) - {"limit", "offset"} <= set(query_parameters(document, path, method))
    assert query_parameters(document, "/api/search")["q"]["required"] is True


def test_bodies_and_answers_are_described(document):
    push = document["paths"]["/api/huggingface/push"]["post"]
    assert push["requestBody"]["required"] is False
    assert set(push["requestBody"]["content"]["application/json"]["schema"]["properties"]) == {
        "token", "repo_name", "format", "private"}
    assert document["paths"]["/api/data"]["get"]["responses"]["200"]["content"]["application/json"]["schema"] == {
        "type": "array", "items": {"$ref": "#/components/schemas/Sample"}}
    assert set(document["paths"]["/api/export"]["get"]["responses"]["200"]["content"]) == {
        "application/vnd.apache.parquet", "application/x-ndjson", "text/csv"}
    assert "text/event-stream" in document["paths"]["/api/generate/batch/stream"]["get"]["responses"]["200"]["content"]
    start = document["paths"]["/api/generate/batch/start"]["post"]
    assert {"400", "401", "409", "413", "503"} <= set(start["responses"])
    assert "401" not in document["paths"]["/api/samples/download"]["post"]["responses"]  # reads only: no token


FILTERS = ("/api/data", "/api/export")


@pytest.mark.parametrize("paths, query, name", [
    (FILTERS, "min_score=2", "min_score"), (FILTERS, "min_score=abc", "min_score"),
    (FILTERS, "min_score=nan", "min_score"), (FILTERS, "without_flag=nope", "without_flag"),
    (FILTERS, "flag=nope", "flag"), (FILTERS, "clean=maybe", "clean"), (FILTERS, "simulated=maybe", "simulated"),
    (("/api/data",), "limit=ten", "limit"), (("/api/data",), "offset=-1", "offset"),
    (("/api/export",), "format=xlsx", "format"), (("/api/samples/random",), "count=0", "count"),
    (("/api/search",), "field=all", "q"), (("/api/generate/batch/status",), "batch_id=" + "x" * 600, "batch_id"),
])
def test_a_bad_query_value_is_a_400_naming_it(client, paths, query, name):
    for path in paths:
        response = client.get(f"{path}?{query}")
        assert response.status_code == 400, (path, query, response.get_data(as_text=True))
        body = response.get_json()
        assert body["success"] is False and f"query parameter {name}" in body["error"], body["error"]


def test_a_bad_filter_on_the_hub_push_is_refused_before_publishing(client, hub):
    response = client.post("/api/huggingface/push?min_score=5", json={"token": "hf_anything"})
    assert response.status_code == 400 and "min_score" in response.get_json()["error"]
    assert hub.files == {}


def test_good_filters_filter(client):
    lines = [
        '{"id": "a", "question": "What is an easement in English land law?", "answer": "A right over land.", '
        '"topic": "Property Law - Easements and Covenants", "difficulty": "basic", "case_citation": "x", '
        '"reasoning": "Step 1: y"}',
        '{"id": "b", "question": "What is consideration in English contract law?", "answer": "Something of value.", '
        '"topic": "Contract Law - Formation of Contracts", "difficulty": "expert", "case_citation": "x", '
        '"reasoning": "Step 1: y"}']
    assert client.post("/api/import/jsonl", json={"content": "\n".join(lines)}).status_code == 200
    assert [r["id"] for r in client.get("/api/data?difficulty=%20expert%20").get_json()] == ["b"]
    assert [r["id"] for r in client.get("/api/data?practice_area=Property Law&limit=&offset=0").get_json()] == ["a"]
    assert [r["id"] for r in client.get("/api/data?limit=1&offset=1").get_json()] == ["b"]
    assert client.get("/api/data?min_score=1&clean=false").status_code == 200
    assert client.get("/api/export?format=csv&topic=Nope").headers["X-Total-Count"] == "0"
