"""Every dashboard endpoint answers with the shape `../shared/api-contract.md` describes."""
from __future__ import annotations

import io
import json

import polars as pl
import pytest


CONTRACT_COLUMNS = {"id", "question", "answer", "reasoning", "topic", "difficulty", "case_citation", "sample_type",
                    "provider", "model", "batch_id", "created_at", "updated_at"}


def generate(client, **body):
    payload = {"practice_area": "Tort Law", "topic": "Nuisance", "difficulty": "basic", **body}
    response = client.post("/api/generate", json=payload)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def imported(sample_id: str, **fields) -> dict:
    base = {"id": sample_id, "question": f"What does {sample_id} ask about easements?",
            "answer": "An easement is a right over land.", "topic": "Property Law - Easements and Covenants",
            "difficulty": "basic", "case_citation": "Re Ellenborough Park [1956] Ch 131",
            "reasoning": "Step 1: identify the right. Step 2: apply the test."}
    return {**base, **fields}


def test_generate_stores_and_returns_the_sample(client):
    body = generate(client, provider="groq", sample_type="educational")
    sample = body["sample"]
    assert body["success"] and body["saved"] is True
    assert isinstance(body["tokens_used"], int) and body["tokens_used"] > 0 and body["elapsed"] >= 0
    assert CONTRACT_COLUMNS <= set(sample)
    assert sample["id"].startswith("groq_") and sample["topic"] == "Tort Law - Nuisance"
    assert sample["difficulty"] == "basic" and sample["sample_type"] == "educational"
    assert sample["provider"] == "groq" and sample["model"] == "g-large" and sample["batch_id"] is None
    assert sample["prompt_tokens"] > 0 and sample["completion_tokens"] > 0 and sample["attempts"] == 1
    data = client.get("/api/data").get_json()
    assert [row["id"] for row in data] == [sample["id"]]


def test_generate_with_save_false_stores_nothing(client):
    body = generate(client, save=False)
    assert body["saved"] is False
    assert client.get("/api/data").get_json() == []


def test_balance_rotates_sample_types(client):
    kinds = [generate(client, sample_type="balance", save=False)["sample"]["sample_type"] for _ in range(4)]
    assert sorted(kinds) == sorted(["case_analysis", "educational", "client_interaction", "statutory_interpretation"])


def test_data_is_a_bare_array_with_every_column_and_optional_paging(client):
    for i in range(3):
        generate(client, difficulty=["basic", "advanced", "basic"][i])
    response = client.get("/api/data")
    rows = response.get_json()
    assert isinstance(rows, list) and len(rows) == 3 and response.headers["X-Total-Count"] == "3"
    assert all(CONTRACT_COLUMNS <= set(row) for row in rows)
    page = client.get("/api/data?limit=1&offset=1&difficulty=basic")
    assert len(page.get_json()) == 1 and page.headers["X-Total-Count"] == "2"


def test_stats_shapes(client):
    generate(client, difficulty="advanced")
    generate(client, topic="Formation of Contracts", practice_area="Contract Law", difficulty="basic")
    stats = client.get("/api/stats").get_json()
    assert "success" not in stats
    assert stats["total"] == 2 and stats["total_topics"] == 2 and stats["total_difficulties"] == 2
    assert stats["difficulty_distribution"] == [{"difficulty": "basic", "len": 1}, {"difficulty": "advanced", "len": 1}]
    assert {t["topic"] for t in stats["top_topics"]} == {"Tort Law - Nuisance", "Contract Law - Formation of Contracts"}
    assert stats["file_size_kb"] > 0 and "question" in stats["columns"]

    detailed = client.get("/api/stats/detailed").get_json()
    assert detailed["success"]
    d = detailed["stats"]
    assert d["total_samples"] == 2 and d["unique_topics"] == 2 and d["unique_practice_areas"] == 2
    assert [b["difficulty"] for b in d["difficulty_breakdown"]] == ["basic", "advanced"]
    assert all(b["avg_answer_length"] > 0 and b["count"] == 1 for b in d["difficulty_breakdown"])
    assert {p["practice_area"] for p in d["practice_areas"]} == {"Tort Law", "Contract Law"}
    assert set(d["avg_lengths"]) == {"question", "answer", "reasoning", "case_citation"}

    tokens = client.get("/api/stats/tokens").get_json()["stats"]
    assert tokens["total_tokens"] > 0 and tokens["avg_tokens_per_sample"] > 0
    assert set(tokens["tokens_by_field"]) == {"question", "answer", "reasoning", "case_citation", "topic"}
    assert sum(f["percentage"] for f in tokens["tokens_by_field"].values()) == pytest.approx(100, abs=0.1)
    assert tokens["tokens_by_difficulty"]["advanced"]["avg_tokens"] > 0
    assert {p["practice_area"] for p in tokens["tokens_by_practice_area"]} == {"Tort Law", "Contract Law"}
    assert all(isinstance(c["cost_usd"], (int, float)) and c["name"] for c in tokens["estimated_costs"].values())
    assert "reported" in tokens["encoding"] and "estimate" in tokens["encoding"]


def test_token_stats_use_reported_usage_where_it_exists(client):
    body = generate(client)
    client.post("/api/import/jsonl", json={"content": json.dumps(imported("imp_1"))})
    tokens = client.get("/api/stats/tokens").get_json()["stats"]
    assert tokens["encoding"].startswith("provider-reported completion tokens for 1 of 2 samples")
    written = sum(tokens["tokens_by_field"][f]["total"] for f in ("question", "answer", "reasoning", "case_citation"))
    imported_estimate = sum(-(-len(imported("imp_1")[f]) // 4) for f in ("question", "answer", "reasoning", "case_citation"))
    assert written == pytest.approx(body["sample"]["completion_tokens"] + imported_estimate, abs=4)


def test_stats_stay_current_after_edits_and_deletes(client):
    first = generate(client, difficulty="basic")["sample"]["id"]
    generate(client, difficulty="basic")
    assert client.get("/api/stats").get_json()["total"] == 2
    client.put(f"/api/sample/{first}", json={"difficulty": "expert"})
    dist = client.get("/api/stats").get_json()["difficulty_distribution"]
    assert dist == [{"difficulty": "basic", "len": 1}, {"difficulty": "expert", "len": 1}]
    client.delete(f"/api/sample/{first}")
    assert client.get("/api/stats").get_json()["difficulty_distribution"] == [{"difficulty": "basic", "len": 1}]


def test_topics_sample_types_providers_models(client):
    topics = client.get("/api/topics").get_json()
    assert set(topics) == {"topics"} and len(topics["topics"]) == 42
    assert topics["topics"][0] == {"practice_area": "Contract Law", "topic": "Formation of Contracts",
                                   "difficulty": "intermediate"}
    kinds = client.get("/api/sample-types").get_json()
    assert kinds["success"] and kinds["default"] == "case_analysis"
    assert [k["id"] for k in kinds["sample_types"]] == ["case_analysis", "educational", "client_interaction",
                                                          "statutory_interpretation", "balance"]
    assert all(k["name"] and "description" in k for k in kinds["sample_types"])
    providers = client.get("/api/providers").get_json()
    assert providers["success"] and providers["default_provider"] == "groq"
    assert {p["id"] for p in providers["providers"]} == {"groq", "cerebras"}
    assert all({"id", "name", "enabled", "default_model", "requests_per_minute", "tokens_per_minute"} <= set(p)
               for p in providers["providers"])
    models = client.get("/api/models").get_json()
    assert models["success"] and models["default_provider"] == "groq" and models["default_model"] == "g-large"
    assert {(m["provider"], m["id"]) for m in models["models"]} == {
        ("groq", "g-large"), ("groq", "g-small"), ("cerebras", "c-large"), ("cerebras", "c-small")}
    assert all({"id", "name", "provider", "provider_name", "context_window", "owned_by"} <= set(m)
               for m in models["models"])


def test_default_provider_is_one_that_is_configured(make_app):
    client = make_app(env_overrides={"GROQ_API_KEY": ""}).test_client()
    assert client.get("/api/providers").get_json()["default_provider"] == "cerebras"
    assert client.get("/api/models").get_json()["default_provider"] == "cerebras"


def test_models_work_offline_with_the_shipped_catalogue(tmp_path):
    from api_server import create_app
    from config.settings import Settings

    app = create_app(Settings.from_env({}, data_dir=tmp_path))  # no keys, no network, nothing started
    models = app.test_client().get("/api/models").get_json()
    assert len(models["models"]) == 16 and models["models"][0]["id"] == "llama-3.3-70b-versatile"
    assert models["models"][0]["context_window"] == 131072 and models["default_model"] == "llama-3.3-70b-versatile"
    app.extensions["services"].store.close()


def test_import_put_delete_download(client):
    lines = [imported("imp_1"), {**imported("imp_2"), "extra_key": "kept"}, imported("imp_1")]
    lines[1] = dict(reversed(list(lines[1].items())))  # keys in any order
    body = client.post("/api/import/jsonl", json={"content": "\n".join(json.dumps(x) for x in lines)}).get_json()
    assert body["success"] and body["total_samples"] == 2 and body["duplicates"] == ["imp_1"]
    again = client.post("/api/import/jsonl", json={"content": json.dumps(imported("imp_2"))}).get_json()
    assert again["duplicates"] == ["imp_2"] and again["total_samples"] == 2
    assert client.get("/api/sample/imp_2").get_json()["sample"]["extra_key"] == "kept"

    before = client.get("/api/sample/imp_1").get_json()["sample"]
    put = client.put("/api/sample/imp_1", json={**imported("imp_1"), "answer": "A new answer."}).get_json()
    assert put["success"] and put["total_samples"] == 2 and put["message"]
    after = client.get("/api/sample/imp_1").get_json()["sample"]
    assert after["answer"] == "A new answer." and after["created_at"] == before["created_at"]
    assert after["updated_at"] > before["updated_at"] and after["question"] == before["question"]

    download = client.get("/api/sample/imp_1/download")
    assert download.headers["Content-Disposition"] == 'attachment; filename="imp_1.json"'
    assert json.loads(download.data)["answer"] == "A new answer."
    bulk = client.post("/api/samples/download", json={"sample_ids": ["imp_2", "nope", "imp_1"]})
    assert [json.loads(line)["id"] for line in bulk.data.decode().splitlines()] == ["imp_2", "imp_1"]
    assert "attachment" in bulk.headers["Content-Disposition"]

    deleted = client.delete("/api/sample/imp_2").get_json()
    assert deleted["success"] and deleted["total_samples"] == 1 and deleted["message"]
    assert client.delete("/api/sample/imp_2").status_code == 404


def test_add_random_search_and_batch_samples(client):
    added = client.post("/api/add", json=imported("x", id=None, question="Is 50% of a [deposit] refundable?"))
    assert added.status_code == 200 and added.get_json()["total_samples"] == 1
    generate(client, difficulty="advanced")
    random = client.get("/api/samples/random?count=5&difficulty=advanced").get_json()
    assert random["success"] and random["count"] == 1 and random["samples"][0]["difficulty"] == "advanced"
    found = client.get("/api/search?q=50%25 of a [deposit]&field=question").get_json()  # regex characters: plain text
    assert found["count"] == 1 and found["query"] == "50% of a [deposit]" and found["field"] == "question"
    assert client.get("/api/search?q=(unclosed").get_json()["count"] == 0
    assert client.get("/api/batch/batch_1_deadbeef/samples").status_code == 404


def test_export_round_trips(client):
    for _ in range(2):
        generate(client)
    original = client.get("/api/data").get_json()
    parquet = client.get("/api/export?format=parquet")
    frame = pl.read_parquet(io.BytesIO(parquet.data))
    assert frame.height == 2 and set(frame["id"]) == {r["id"] for r in original}
    assert frame["answer"].to_list() == [r["answer"] for r in original]
    jsonl = client.get("/api/export?format=jsonl")
    rows = [json.loads(line) for line in jsonl.data.decode().splitlines()]
    assert [r["question"] for r in rows] == [r["question"] for r in original]
    csv_frame = pl.read_csv(io.BytesIO(client.get("/api/export?format=csv").data))
    assert csv_frame["reasoning"].to_list() == [r["reasoning"] for r in original]
    assert "attachment" in parquet.headers["Content-Disposition"]


def test_health_reports_readiness_and_provider_states(client):
    health = client.get("/api/health").get_json()
    assert "success" not in health
    assert health["status"] == "ok" and health["ready"] and health["dataset_exists"] is False
    assert health["groq_configured"] and health["cerebras_configured"] and health["batch_generation_running"] is False
    assert health["store"]["writable"] and health["providers"]["groq"]["state"] == "ok" and health["demo"] is False
    generate(client)
    assert client.get("/api/health").get_json()["dataset_exists"] is True


def test_openapi_describes_every_route(make_app):
    app = make_app()
    spec = app.test_client().get("/api/openapi.json").get_json()
    described = {(path, method.upper()) for path, ops in spec["paths"].items() for method in ops}
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/") or rule.rule in ("/api/openapi.json", "/api/generate/batch/stream"):
            continue
        path = rule.rule.replace("<", "{").replace(">", "}")
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (path, method) in described, (path, method)
    assert spec["paths"]["/api/generate"]["post"]["requestBody"]["content"]["application/json"]["schema"][
        "required"] == ["topic"]



@pytest.mark.parametrize("encoding", ["gzip", "br", "zstd"])
def test_compressed_data_decodes_to_the_same_array(client, encoding):
    for i in range(30):
        assert client.post("/api/add", json=imported(f"z{i}", id=None, question=f"Is clause {i} a penalty?")
                           ).status_code == 200
    plain = client.get("/api/data", headers={"Accept-Encoding": "identity"})
    packed = client.get("/api/data", headers={"Accept-Encoding": encoding})
    assert "Content-Encoding" not in plain.headers and packed.headers["Content-Encoding"] == encoding
    assert packed.headers["X-Total-Count"] == "30" and "Accept-Encoding" in packed.headers["Vary"]
    raw = packed.get_data()
    if encoding == "gzip":
        import gzip
        decoded = gzip.decompress(raw)
    elif encoding == "br":
        import brotli
        decoded = brotli.decompress(raw)
    else:
        from backports import zstd
        decoded = zstd.decompress(raw)
    assert len(raw) < len(plain.get_data()) / 3
    assert json.loads(decoded) == plain.get_json() and len(plain.get_json()) == 30
    stream = client.get("/api/generate/batch/stream", headers={"Accept-Encoding": encoding}, buffered=False)
    assert "Content-Encoding" not in stream.headers      # events are never held back by a compressor
    stream.close()
