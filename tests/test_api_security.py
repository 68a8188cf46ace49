"""The API token, CORS, no secret in any response or log line, running without keys, demo mode."""
from __future__ import annotations

import json
import logging

import pytest

from simulator.server import groq_error
from tests.conftest import CEREBRAS_KEY, GROQ_KEY
from web.logs import install_redaction, remove_redaction

TOKEN = "s3cret-token-value"
GENERATE = {"practice_area": "Tort Law", "topic": "Nuisance", "difficulty": "basic"}
SAMPLE_LINE = json.dumps({"id": "t1", "question": "What is a nuisance in English tort law?", "answer": "An interference.",
                          "topic": "Tort Law - Nuisance", "difficulty": "basic", "case_citation": "x",
                          "reasoning": "Step 1: y"})


@pytest.fixture
def guarded(make_app):
    return make_app(api_token=TOKEN).test_client()


@pytest.mark.parametrize("method, path, body", [
    ("post", "/api/generate", GENERATE),
    ("post", "/api/import/jsonl", {"content": SAMPLE_LINE}),
    ("post", "/api/add", {"question": "q", "answer": "a", "reasoning": "r", "case_citation": "c",
                          "topic": "Tort Law - Nuisance", "difficulty": "basic"}),
    ("put", "/api/sample/t1", {"answer": "changed"}),
    ("delete", "/api/sample/t1", None),
    ("post", "/api/generate/batch/start", {"target_count": 5}),
    ("post", "/api/generate/batch/stop", {}),
])
def test_changes_need_the_token(guarded, fake, method, path, body):
    response = getattr(guarded, method)(path, json=body)
    assert response.status_code == 401 and response.get_json()["success"] is False
    assert response.headers["WWW-Authenticate"] == "Bearer"
    wrong = getattr(guarded, method)(path, json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert len(fake.requests) == 0 and guarded.get("/api/data").get_json() == []


def test_the_token_lets_changes_through_and_reads_stay_open(guarded):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert guarded.post("/api/import/jsonl", json={"content": SAMPLE_LINE}, headers=auth).status_code == 200
    assert guarded.post("/api/generate", json=GENERATE, headers=auth).status_code == 200
    for path in ("/api/data", "/api/stats", "/api/health", "/api/topics", "/api/generate/batch/status",
                 "/api/batches/stuck", "/api/sample/t1/download"):
        assert guarded.get(path).status_code == 200, path
    assert guarded.post("/api/samples/download", json={"sample_ids": ["t1"]}).status_code == 200  # a read
    assert guarded.put("/api/sample/t1", json={"answer": "changed"}, headers=auth).status_code == 200


def test_unknown_routes_are_404_even_with_a_token_set(guarded):
    assert guarded.post("/api/unknown").status_code == 404


def test_cors_preflight_and_headers(client):
    preflight = client.options("/api/generate", headers={
        "Origin": "http://localhost:5173", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "Content-Type, Authorization"})
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == "http://localhost:5173"
    allowed_methods = preflight.headers["Access-Control-Allow-Methods"]
    assert all(m in allowed_methods for m in ("GET", "POST", "PUT", "DELETE"))
    assert "authorization" in preflight.headers["Access-Control-Allow-Headers"].lower()
    simple = client.get("/api/stats", headers={"Origin": "http://127.0.0.1:5173"})
    assert simple.headers["Access-Control-Allow-Origin"] == "http://127.0.0.1:5173"
    foreign = client.get("/api/stats", headers={"Origin": "http://evil.example"})
    assert "Access-Control-Allow-Origin" not in foreign.headers


def test_configured_cors_origins(make_app):
    client = make_app(cors_origins=("https://dash.example",)).test_client()
    ok = client.get("/api/topics", headers={"Origin": "https://dash.example"})
    assert ok.headers["Access-Control-Allow-Origin"] == "https://dash.example"
    assert "Access-Control-Allow-Origin" not in client.get(
        "/api/topics", headers={"Origin": "http://localhost:5173"}).headers


def test_without_keys_the_server_starts_and_generation_names_the_missing_variable(make_app, fake):
    client = make_app(env_overrides={"GROQ_API_KEY": "", "CEREBRAS_API_KEY": ""}).test_client()
    health = client.get("/api/health").get_json()
    assert health["groq_configured"] is False and health["cerebras_configured"] is False
    assert health["status"] == "degraded" and "GROQ_API_KEY" in health["problems"][0]
    assert health["providers"]["groq"] == {"state": "not_configured", "missing": "GROQ_API_KEY"}
    response = client.post("/api/generate", json=GENERATE)
    assert response.status_code == 503
    assert "GROQ_API_KEY" in response.get_json()["error"] and "CEREBRAS_API_KEY" in response.get_json()["error"]
    batch = client.post("/api/generate/batch/start", json={"target_count": 3})
    assert batch.status_code == 503 and "GROQ_API_KEY" in batch.get_json()["error"]
    assert client.get("/api/providers").get_json()["default_provider"] is None
    assert len(fake.requests) == 0


@pytest.fixture
def redaction():
    yield install_redaction
    remove_redaction()


def test_no_secret_in_responses_or_logs(make_app, fake, caplog, redaction):
    app = make_app()
    redaction(app.extensions["services"].secrets())   # what `api_server.main` does at start-up
    client = app.test_client()
    leak = f"Invalid API Key {GROQ_KEY} (also {CEREBRAS_KEY}) Authorization: Bearer {GROQ_KEY}"
    for model in ("g-large", "g-small"):
        fake.always(model, groq_error(401, leak, "invalid_api_key"))
    for model in ("c-large", "c-small"):
        fake.always(model, groq_error(500, leak))
    caplog.set_level(logging.DEBUG)
    logging.getLogger("api").error("provider said: %s", leak)  # even a careless log line is cleaned
    response = client.post("/api/generate", json=GENERATE)
    assert response.status_code in (502, 503)
    text = response.get_data(as_text=True)
    assert "[redacted" in text
    everything = text + "".join(client.get(p).get_data(as_text=True) for p in (
        "/api/health", "/api/providers", "/api/stats/providers", "/metrics", "/api/generate/batch/status"))
    logs = "\n".join(handler_record.getMessage() + (handler_record.exc_text or "")   # tracebacks too
                      for handler_record in caplog.records)
    for secret in (GROQ_KEY, CEREBRAS_KEY):
        assert secret not in everything
        assert secret not in logs


def test_generation_failure_answers_503_with_retry_after(client, fake):
    for model in ("g-large", "g-small", "c-large", "c-small"):
        fake.script(model, groq_error(429, "slow down", "rate_limit_exceeded", headers={"retry-after": "40"}))
    first = client.post("/api/generate", json=GENERATE)
    assert first.status_code == 503 and int(first.headers["Retry-After"]) >= 30
    second = client.post("/api/generate", json=GENERATE)
    assert second.status_code == 503 and second.get_json()["kind"] == "all_cooling"
    assert 30 <= int(second.headers["Retry-After"]) <= 40


def test_demo_mode_runs_without_keys_and_marks_records(tmp_path):
    from api_server import create_app
    from simulator.demo import start_demo
    from config.settings import Settings

    settings, demo = start_demo(Settings.from_env({}, data_dir=tmp_path), latency=(0.0, 0.01), fault_rate=0.0, seed=1)
    try:
        app = create_app(settings, demo=demo)
        app.extensions["services"].start(resume_batches=False)
        client = app.test_client()
        health = client.get("/api/health").get_json()
        assert health["demo"] is True and health["groq_configured"] and health["ready"]
        sample = client.post("/api/generate", json=GENERATE).get_json()["sample"]
        assert sample["simulated"] is True
        assert settings.database_path.parent == tmp_path / "demo"
        assert client.get("/api/data?simulated=true").get_json()[0]["id"] == sample["id"]
        app.extensions["services"].store.close()
    finally:
        demo.stop()
