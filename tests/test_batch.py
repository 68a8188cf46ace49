"""Background batches against the local fake providers."""
from __future__ import annotations

import json
import os
import threading
from collections import Counter

import pytest

from batch.rotation import Rotation
from config.catalog import find_topic
from simulator.server import Reply, cerebras_error, groq_error
from tests.conftest import wait_for

FAST_BATCH = {"batch": {"max_in_flight": 6, "max_wait_seconds": 2, "heartbeat_seconds": 0.2,
                        "topic_skip_after": 2, "topic_skip_seconds": 30}}
ALL_MODELS = ("g-large", "g-small", "c-large", "c-small")


@pytest.fixture
def app(make_app):
    return make_app(FAST_BATCH)


def start(client, **body):
    response = client.post("/api/generate/batch/start", json={"target_count": 10, **body})
    assert response.status_code == 200, response.get_json()
    return response.get_json()["batch_id"]


def status(client, batch_id):
    return client.get(f"/api/generate/batch/status?batch_id={batch_id}").get_json()


def finished(client, batch_id):
    state = status(client, batch_id)
    return state if not state["running"] else None


def test_a_batch_reaches_exactly_its_target(app, fake):
    client = app.test_client()
    fake.latency = 0.03
    client.post("/api/import/jsonl", json={"content": json.dumps({
        "id": "pre", "question": "An existing question about mortgages and their remedies?", "answer": "a",
        "topic": "Property Law - Mortgages", "difficulty": "basic", "case_citation": "c", "reasoning": "r"})})
    batch_id = start(client, target_count=21, sample_type="balance")
    assert batch_id.startswith("batch_") and len(batch_id.split("_")[2]) == 8
    state = wait_for(lambda: finished(client, batch_id))
    assert state["status"] == "completed" and state["samples_generated"] == 20 and state["total"] == 20
    assert state["progress"] == 100 and state["total_tokens"] > 0 and state["completed_at"]
    assert client.get("/api/stats").get_json()["total"] == 21
    samples = client.get(f"/api/batch/{batch_id}/samples").get_json()
    assert samples["count"] == 20 and samples["batch_info"]["status"] == "completed"
    assert len({s["id"] for s in samples["samples"]}) == 20
    assert len({s["question"] for s in samples["samples"]}) == 20
    areas = {s["topic"].split(" - ")[0] for s in samples["samples"]}
    assert len(areas) == 11  # any prefix is spread across practice areas
    assert Counter(s["sample_type"] for s in samples["samples"]) == Counter(
        {"case_analysis": 5, "educational": 5, "client_interaction": 5, "statutory_interpretation": 5})
    history = client.get("/api/generate/batch/history").get_json()
    record = history["batches"][0]
    assert history["success"] and history["count"] == 1
    assert {"id", "started_at", "completed_at", "model", "topic_filter", "difficulty_filter", "target",
            "samples_generated", "tokens_used", "status", "errors", "model_switches"} <= set(record)
    assert record["id"] == batch_id and record["target"] == 20 and record["status"] == "completed"
    attempts = client.get(f"/api/batch/{batch_id}/attempts").get_json()["attempts"]
    assert sum(a["outcome"] == "success" for a in attempts) == 20
    assert all(a["provider"] and a["model"] and a["latency"] is not None for a in attempts)


def test_state_object_follows_the_contract(app, fake):
    client = app.test_client()
    batch_id = start(client, target_count=3, topic="Tort Law - Nuisance", difficulty="expert",
                     reasoning_instruction="Cite the leading case first.", sample_type="educational")
    state = wait_for(lambda: finished(client, batch_id))
    for key in ("batch_id", "running", "progress", "total", "samples_generated", "total_tokens", "current_sample",
                "current_provider", "current_model", "started_at", "completed_at", "errors", "model_switches",
                "provider_switches", "failed_models_by_provider", "consecutive_failures", "skipped_topics",
                "circuit_breaker_summary", "topic_filter", "difficulty_filter", "reasoning_instruction",
                "sample_type_filter", "rate_per_minute", "eta_seconds", "model_states"):
        assert key in state, key
    assert state["topic_filter"] == "Tort Law - Nuisance" and state["difficulty_filter"] == "expert"
    assert state["sample_type_filter"] == "educational" and state["current_sample"] == "Tort Law - Nuisance"
    assert state["model_states"]["groq"]["g-large"]["state"] == "ok"
    rows = client.get(f"/api/batch/{batch_id}/samples").get_json()["samples"]
    assert {(r["topic"], r["difficulty"], r["sample_type"]) for r in rows} == {
        ("Tort Law - Nuisance", "expert", "educational")}
    assert "Cite the leading case first." in fake.requests[0].body["messages"][1]["content"]
    everything = client.get("/api/generate/batch/status").get_json()
    assert everything["count"] == 1 and batch_id in everything["batches"]


def test_faults_of_each_category_mid_batch(make_app, fake):
    no_cooldowns = {c: 0 for c in ("rate_limit", "model_unavailable", "timeout", "server_error", "invalid_output")}
    client = make_app({**FAST_BATCH, "engine": {"cooldowns": no_cooldowns},
                       "providers": {"groq": {"timeouts": {"read": 0.4}}}}).test_client()
    fake.latency = 0.01
    fake.script("g-large", groq_error(429, "slow", "rate_limit_exceeded", headers={"retry-after": "0"}),
                Reply(status=498, body={"error": {"message": "capacity"}}), Reply(hang=True),
                Reply(content="prose, not JSON"), groq_error(500, "boom"))
    fake.always("g-small", groq_error(503, "Service Unavailable"))
    fake.script("c-large", cerebras_error(503, "busy", body_status=400), cerebras_error(401, "Wrong API Key"))
    batch_id = start(client, target_count=25, provider="groq")
    state = wait_for(lambda: finished(client, batch_id), timeout=30)
    assert state["status"] == "completed" and state["samples_generated"] == 25
    assert client.get("/api/stats").get_json()["total"] == 25
    attempts = client.get(f"/api/batch/{batch_id}/attempts").get_json()["attempts"]
    categories = {a["category"] for a in attempts}
    assert {"rate_limit", "model_unavailable", "timeout", "invalid_output", "server_error", "authentication"} <= categories
    assert sum(a["outcome"] == "success" for a in attempts) == 25
    switch = (state["model_switches"] + state["provider_switches"])[0]
    assert switch["reason"] and switch["timestamp"] and "samples_generated" in switch
    assert any((e["from_provider"], e["to_provider"]) == ("groq", "cerebras") for e in state["provider_switches"])
    assert state["failed_models_by_provider"]["cerebras"] == ["c-large", "c-small"]  # the rejected key


def test_a_write_whose_answer_was_lost_is_counted_once_writes_work_again(make_app, fake, monkeypatch):
    """PostgreSQL going away mid-commit: the row was stored but the write reported failure. The
    batch pauses, and when writes work again it counts its stored rows, so it still ends exactly
    at its target (it made one sample too many before), and its producers match the rows."""
    from storage.errors import WriteFailed

    app = make_app({"batch": {**FAST_BATCH["batch"], "storage_retry_seconds": 0.05}})
    store = app.extensions["services"].store
    real_add, lost = store.add, []

    def add(record):
        stored = real_add(record)
        if not lost:   # committed, but the answer is lost with the connection
            lost.append(record["id"])
            raise WriteFailed(store.path, "server closed the connection unexpectedly", "retried")
        return stored
    monkeypatch.setattr(store, "add", add)
    client = app.test_client()
    batch_id = start(client, target_count=8)
    state = wait_for(lambda: finished(client, batch_id), timeout=30)
    assert state["status"] == "completed" and state["samples_generated"] == 8
    assert lost and store.count({"batch_id": batch_id}) == 8
    stored = store.columns(("provider", "model"), filters={"batch_id": batch_id})
    produced: dict[str, int] = {}
    for provider, model in zip(stored["provider"], stored["model"]):
        produced[f"{provider}/{model}"] = produced.get(f"{provider}/{model}", 0) + 1
    assert state["models_used"] == produced and sum(state["providers_used"].values()) == 8
    history = client.get("/api/generate/batch/history").get_json()["batches"][0]
    assert history["models_used"] == produced


def test_all_cooling_then_recovery(app, fake):
    client = app.test_client()
    for model in ALL_MODELS:
        fake.script(model, groq_error(429, "slow down", "rate_limit_exceeded", headers={"retry-after": "1"}))
    batch_id = start(client, target_count=4)
    waiting = wait_for(lambda: (s := status(client, batch_id))["waiting_until"] and s)
    assert waiting["running"] and waiting["waiting_reason"]
    state = wait_for(lambda: finished(client, batch_id), timeout=30)
    assert state["status"] == "completed" and state["samples_generated"] == 4


def test_nothing_recoverable_ends_the_batch_with_a_clear_error(app, fake):
    client = app.test_client()
    for model in ALL_MODELS:
        fake.always(model, groq_error(401, "Invalid API Key", "invalid_api_key"))
    batch_id = start(client, target_count=5)
    state = wait_for(lambda: finished(client, batch_id))
    assert state["status"] == "failed" and "no_recovery" in state["final_error"]
    assert client.get("/api/stats").get_json()["total"] == 0


def test_a_topic_that_keeps_failing_is_skipped(app, fake):
    client = app.test_client()
    for model in ALL_MODELS:
        fake.always(model, Reply(content="I would rather not answer in JSON."))
    batch_id = start(client, target_count=3, topic="Tax Law - VAT")
    state = wait_for(lambda: status(client, batch_id)["skipped_topics"] and status(client, batch_id))
    assert state["skipped_topics"][0]["topic"] == "Tax Law - VAT" and state["skipped_topics"][0]["until"]
    assert state["running"] and state["errors_total"] >= 2
    client.post("/api/generate/batch/stop", json={"batch_id": batch_id})
    outputs = client.get("/api/stats/rejected-outputs").get_json()["outputs"]
    assert outputs and outputs[-1]["raw_output"] == "I would rather not answer in JSON."


def test_stop_takes_effect_at_once(app, fake):
    client = app.test_client()
    fake.latency = 0.3
    batch_id = start(client, target_count=200)
    # stop while a request is in flight (recorded on arrival, answered 0.3 s later), however long a
    # stored sample's writes take on this backend
    wait_for(lambda: status(client, batch_id)["samples_generated"] >= 3
             and len(fake.requests) > client.get("/api/stats").get_json()["total"])
    stopped = client.post("/api/generate/batch/stop", json={"batch_id": batch_id}).get_json()
    assert stopped["success"] and stopped["batch_id"] == batch_id
    count_at_stop = client.get("/api/stats").get_json()["total"]
    wait_for(lambda: not app.extensions["services"].batches._runs[batch_id].alive(), timeout=10)
    assert len(fake.requests) > count_at_stop  # every request succeeded, so some answered after the stop...
    assert client.get("/api/stats").get_json()["total"] == count_at_stop  # ...and their samples were discarded
    state = status(client, batch_id)
    assert state["status"] == "stopped" and state["running"] is False
    assert client.get("/api/generate/batch/history").get_json()["batches"][0]["status"] == "stopped"
    again = client.post("/api/generate/batch/stop", json={"batch_id": batch_id}).get_json()
    assert again["success"] and again["stopped"] is False and "already ended" in again["message"]


def test_second_start_is_409_naming_the_running_batch(app, fake):
    client = app.test_client()
    fake.latency = 0.2
    batch_id = start(client, target_count=50)
    second = client.post("/api/generate/batch/start", json={"target_count": 60})
    assert second.status_code == 409 and batch_id in second.get_json()["error"]
    assert client.get("/api/health").get_json()["batch_generation_running"] is True
    all_stopped = client.post("/api/generate/batch/stop", json={}).get_json()
    assert all_stopped["stopped_batch_ids"] == [batch_id]


def test_a_batch_interrupted_by_shutdown_resumes_under_its_id(make_app, fake, tmp_path):
    fake.latency = 0.1
    first = make_app(FAST_BATCH, data_dir=tmp_path / "shared")
    client = first.test_client()
    batch_id = start(client, target_count=30)
    wait_for(lambda: status(client, batch_id)["samples_generated"] >= 5)
    first.extensions["services"].batches.shutdown()
    assert status(client, batch_id)["status"] == "running"  # left to resume, not recorded as stopped
    first.extensions["services"].store.close()

    second = make_app(FAST_BATCH, data_dir=tmp_path / "shared")
    client2 = second.test_client()
    state = wait_for(lambda: finished(client2, batch_id), timeout=30)
    assert state["status"] == "completed" and state["resumed_count"] == 1 and state["samples_generated"] == 30
    rows = client2.get(f"/api/batch/{batch_id}/samples").get_json()["samples"]
    assert len(rows) == 30 and len({r["id"] for r in rows}) == 30
    assert client2.get("/api/stats").get_json()["total"] == 30


def test_stuck_is_read_only_and_finds_zombies(make_app, fake, tmp_path):
    first = make_app(FAST_BATCH, data_dir=tmp_path / "z")
    fake.latency = 0.2
    batch_id = start(first.test_client(), target_count=40)
    first.extensions["services"].batches.shutdown()
    first.extensions["services"].store.close()
    observer = make_app(FAST_BATCH, data_dir=tmp_path / "z", start_batches=False)  # no worker resumes it
    client = observer.test_client()
    for _ in range(2):
        stuck = client.get("/api/batches/stuck").get_json()
        assert stuck["success"] and stuck["count"] == 1
        entry = stuck["stuck_batches"][0]
        assert entry["batch_id"] == batch_id and entry["is_zombie"] is True and entry["target"] == 40
        assert {"model", "elapsed_minutes", "samples_generated", "started_at"} <= set(entry)
        assert status(client, batch_id)["status"] == "running"  # the GET changed nothing


def test_sse_stream(app, fake):
    client = app.test_client()
    response = client.get("/api/generate/batch/stream", headers={"Origin": "http://localhost:5173"})
    assert response.mimetype == "text/event-stream"
    assert response.headers["Access-Control-Allow-Origin"] == "http://localhost:5173"
    chunks = (c.decode() if isinstance(c, bytes) else c for c in response.response)
    first = next(chunks)
    assert first.startswith("data: ") and first.endswith("\n\n")
    assert json.loads(first[6:]) == {"type": "all_batches", "batches": {}}
    assert next(chunks) == ": heartbeat\n\n"
    batch_id = start(client, target_count=2)
    frames = []
    while not frames or frames[-1]["batch"]["running"]:
        chunk = next(chunks)
        if chunk.startswith("data: "):
            frames.append(json.loads(chunk[6:]))
    assert all(f["type"] == "batch_update" and f["batch_id"] == batch_id for f in frames)
    assert frames[-1]["batch"]["samples_generated"] == 2 and frames[-1]["batch"]["status"] == "completed"
    response.close()


def test_provider_stats_and_prometheus_metrics(app, fake):
    client = app.test_client()
    fake.script("g-large", groq_error(500, "boom"))
    batch_id = start(client, target_count=4)
    wait_for(lambda: finished(client, batch_id))
    stats = client.get("/api/stats/providers").get_json()
    large = stats["providers"]["groq"]["models"]["g-large"]
    assert large["failures_by_category"] == {"server_error": 1} and large["switches_away"] >= 1
    small = stats["providers"]["groq"]["models"]["g-small"]
    assert small["successes"] >= 1 and small["avg_tokens"] > 0 and small["latency_seconds"]["p50"] > 0
    assert small["success_rate"] == 1.0 and "cost_usd" in small
    text = client.get("/metrics").get_data(as_text=True)
    assert 'llm_attempts_total{category="server_error",model="g-large",outcome="failure",provider="groq"} 1.0' in text
    assert "dataset_samples 4.0" in text and "llm_latency_seconds" in text


def test_rotation_spreads_any_prefix():
    rotation = Rotation()
    slots = [rotation.next() for _ in range(210)]
    assert len({s.topic.practice_area for s in slots[:11]}) == 11
    assert len({s.difficulty for s in slots[:5]}) == 5
    assert len({(s.topic.label, s.difficulty) for s in slots}) == 210
    single = Rotation(topics=[find_topic("Tax Law - VAT")])
    assert len({(s.difficulty, s.sample_type) for s in (single.next() for _ in range(20))}) == 20
    released = rotation.next()
    rotation.release(released)
    assert rotation.next() == released  # a failed slot is asked for again


def test_concurrent_starts_only_one_wins(app, fake):
    client = app.test_client()
    fake.latency = 0.2
    results = []

    def go():
        results.append(app.test_client().post("/api/generate/batch/start", json={"target_count": 30}).status_code)

    threads = [threading.Thread(target=go) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [200, 409, 409, 409]
    client.post("/api/generate/batch/stop", json={})


def test_a_listener_that_raises_after_the_commit_does_not_make_a_batch_overshoot(app, fake):
    svc = app.extensions["services"]
    raised = []

    def fails_once(change) -> None:
        if not raised:
            raised.append(change)
            raise RuntimeError("listener bug")

    svc.store.on_change(fails_once)
    client = app.test_client()
    batch_id = start(client, target_count=5)
    state = wait_for(lambda: finished(client, batch_id))
    assert raised and state["status"] == "completed" and state["samples_generated"] == 5
    assert client.get("/api/stats").get_json()["total"] == 5
    assert client.get(f"/api/batch/{batch_id}/samples").get_json()["count"] == 5


def test_batches_do_not_leak_descriptors(make_app, fake):
    app = make_app({"batch": {**FAST_BATCH["batch"], "max_in_flight": 4}})
    client = app.test_client()
    counts = []
    for round_ in range(10):
        batch_id = start(client, target_count=4 * (round_ + 1))
        wait_for(lambda: finished(client, batch_id))
        svc = app.extensions["services"]
        wait_for(lambda: not any(run.alive() for run in svc.batches._runs.values()))
        counts.append(len(os.listdir("/proc/self/fd")))
    # Each batch's 4 threads would leak 8 descriptors without closing: 72 over 9 more batches. A few
    # come and go with pooled HTTP connections, so the bound leaves room for that noise, not a leak.
    assert counts[-1] - counts[0] < 24, counts
