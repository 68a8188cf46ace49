"""What people watching a batch see is what really happened: waits are not errors, the model named is
the one that produced the samples, the rate and ETA count the waits, and health says when a
provider is cooling or disabled."""
from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone

from simulator.server import cerebras_error, groq_error
from state import BatchState
from tests.conftest import wait_for
from tests.test_batch import finished, status

FAST_BATCH = {"batch": {"max_in_flight": 2, "max_wait_seconds": 0.5, "heartbeat_seconds": 0.2,
                        "topic_skip_after": 2, "topic_skip_seconds": 30}}
ALL_MODELS = ("g-large", "g-small", "c-large", "c-small")
GENERATE = {"practice_area": "Tort Law", "topic": "Nuisance", "difficulty": "basic"}


def slow_down(seconds: float = 1):
    return groq_error(429, "Rate limit reached, slow down", "rate_limit_exceeded",
                      headers={"retry-after": str(seconds)})


def start(client, **body):
    response = client.post("/api/generate/batch/start", json={"target_count": 4, **body})
    assert response.status_code == 200, response.get_json()
    return response.get_json()["batch_id"]


def history(client, batch_id):
    return next(b for b in client.get("/api/generate/batch/history").get_json()["batches"] if b["id"] == batch_id)


def seconds_until(iso: str) -> float:
    return (datetime.fromisoformat(iso) - datetime.now(timezone.utc)).total_seconds()


# -- waits are not errors -----------------------------------------------------------------------

def test_a_batch_held_up_only_by_cooling_lists_its_waits_and_no_errors(make_app, fake):
    client = make_app(FAST_BATCH).test_client()
    for model in ALL_MODELS:   # every model refuses twice with a 429 and a retry-after
        fake.script(model, slow_down(), slow_down())
    batch_id = start(client, target_count=4)
    state = wait_for(lambda: finished(client, batch_id), timeout=30)
    assert state["status"] == "completed" and state["samples_generated"] == 4
    assert state["errors"] == [] and state["errors_total"] == 0 and state["consecutive_failures"] == 0
    assert state["waits"] and state["waits_total"] >= len(state["waits"])
    for wait in state["waits"]:
        assert {"from", "until", "reason", "blocked"} <= set(wait)
        assert datetime.fromisoformat(wait["until"]) >= datetime.fromisoformat(wait["from"])
        assert "every candidate is cooling down or out of budget" in wait["reason"]
        blocked = {(b["provider"], b["model"]): b for b in wait["blocked"]}
        assert set(blocked) == {("groq", "g-large"), ("groq", "g-small"), ("cerebras", "c-large"),
                                ("cerebras", "c-small")}   # every candidate, with its provider
        for (provider, model), entry in blocked.items():
            # cooling after the 429, or paced by the limit learned from it
            if entry["why"] == "budget":
                assert entry["until"] and f"{provider}/{model} out of budget" in wait["reason"]
                continue
            assert entry["why"] == "cooling" and entry["category"] == "rate_limit" and entry["until"]
            assert f"{provider}/{model} cooling (rate_limit)" in wait["reason"]
        assert "server_error" not in wait["reason"]
    record = history(client, batch_id)
    assert record["errors"] == [] and record["errors_total"] == 0
    assert record["waits"] == state["waits"] and record["waits_total"] == state["waits_total"]


def test_a_wait_names_what_blocked_each_candidate_budget_included(make_app, fake):
    budget = {"rpm": 1}
    client = make_app({**FAST_BATCH, "providers": {"cerebras": {"models": [
        {"id": "c-large", "limits": budget}, {"id": "c-small", "limits": budget}]}}}).test_client()
    for model in ("g-large", "g-small"):
        fake.always(model, slow_down(30))
    batch_id = start(client, target_count=6)
    # waiting again after the second sample (the wait before it can be listed while the sample that
    # ended it clears `waiting_reason`, until the next attempt finds every candidate held)
    state = wait_for(lambda: (s := status(client, batch_id))["samples_generated"] == 2 and s["waits"]
                     and s["waiting_reason"] and s)
    wait = state["waits"][-1]
    blocked = {(b["provider"], b["model"]): b for b in wait["blocked"]}
    assert blocked[("groq", "g-large")]["why"] == "cooling" and blocked[("groq", "g-large")]["category"] == "rate_limit"
    for model in ("c-large", "c-small"):   # the Cerebras budget holds these, and the reason says so
        entry = blocked[("cerebras", model)]
        assert entry["why"] == "budget" and entry["window"] == "rpm" and 0 < seconds_until(entry["until"]) <= 61
        assert f"cerebras/{model} out of budget (requests per minute)" in wait["reason"]
    assert "groq/g-large cooling (rate_limit)" in wait["reason"] and "groq/g-small cooling (rate_limit)" in wait["reason"]
    assert state["waiting_reason"] == wait["reason"]
    assert state["errors"] == []
    client.post("/api/generate/batch/stop", json={"batch_id": batch_id})


def test_a_failed_attempt_is_an_error_with_its_own_category_and_the_wait_after_it_a_wait(make_app, fake):
    client = make_app({**FAST_BATCH, "batch": {**FAST_BATCH["batch"], "max_in_flight": 1}}).test_client()
    fake.script("g-large", groq_error(500, "Internal Server Error", type_="internal_server_error"))
    for model in ("g-small", "c-large", "c-small"):
        fake.script(model, slow_down())
    batch_id = start(client, target_count=2)
    state = wait_for(lambda: finished(client, batch_id), timeout=30)
    assert state["status"] == "completed"
    [error] = state["errors"]
    assert error["category"] == "server_error" and "groq/g-large server_error" in error["error"]
    assert "cooling" not in error["error"] and "rate_limit" not in error["error"]   # the 429s cost no work
    reasons = " ".join(w["reason"] for w in state["waits"])
    assert "groq/g-large cooling (server_error)" in reasons and "groq/g-small cooling (rate_limit)" in reasons


# -- the model that produced the samples ---------------------------------------------------------

def test_models_used_matches_the_stored_rows_and_history_names_the_producer(make_app, fake):
    client = make_app(FAST_BATCH).test_client()
    for model in ("g-large", "g-small"):
        fake.always(model, slow_down(60))
    batch_id = start(client, target_count=6, provider="groq", model="g-large")
    state = wait_for(lambda: finished(client, batch_id), timeout=30)
    assert state["status"] == "completed"
    rows = client.get(f"/api/batch/{batch_id}/samples").get_json()["samples"]
    assert len(rows) == 6
    assert state["models_used"] == dict(Counter(f"{r['provider']}/{r['model']}" for r in rows))
    assert state["providers_used"] == dict(Counter(r["provider"] for r in rows)) == {"cerebras": 6}
    record = history(client, batch_id)
    top = max(state["models_used"], key=state["models_used"].get)
    assert (record["provider"], record["model"]) == tuple(top.split("/", 1))
    assert record["provider"] == "cerebras" and record["model"].startswith("c-")
    assert (record["requested_provider"], record["requested_model"]) == ("groq", "g-large")
    assert record["models_used"] == state["models_used"] and record["providers_used"] == state["providers_used"]
    assert (state["provider"], state["model"]) == (record["provider"], record["model"])

    fake.always("g-large", None)
    fake.always("g-small", None)
    unnamed = start(client, target_count=9)   # no provider or model asked for
    assert wait_for(lambda: finished(client, unnamed))["status"] == "completed"
    record = history(client, unnamed)
    assert record["requested_provider"] is None and record["requested_model"] is None
    assert record["model"] and record["provider"]
    assert record["models_used"][f"{record['provider']}/{record['model']}"] == max(record["models_used"].values())
    samples = client.get(f"/api/batch/{unnamed}/samples").get_json()
    assert record["models_used"] == dict(Counter(f"{r['provider']}/{r['model']}" for r in samples["samples"]))
    assert samples["batch_info"]["model"] == record["model"]


def test_a_resumed_batch_counts_models_used_from_its_stored_rows(make_app, fake, tmp_path):
    fake.latency = 0.05
    first = make_app(FAST_BATCH, data_dir=tmp_path / "shared")
    client = first.test_client()
    batch_id = start(client, target_count=12)
    wait_for(lambda: status(client, batch_id)["samples_generated"] >= 3)
    first.extensions["services"].batches.shutdown()
    first.extensions["services"].store.close()

    second = make_app(FAST_BATCH, data_dir=tmp_path / "shared")
    client2 = second.test_client()
    state = wait_for(lambda: finished(client2, batch_id), timeout=30)
    assert state["status"] == "completed" and state["resumed_count"] == 1
    rows = client2.get(f"/api/batch/{batch_id}/samples").get_json()["samples"]
    assert len(rows) == 12
    assert state["models_used"] == dict(Counter(f"{r['provider']}/{r['model']}" for r in rows))
    assert sum(state["providers_used"].values()) == 12 and state["model"] and state["provider"]


def test_a_batch_saved_before_the_requested_fields_keeps_what_was_requested():
    old = {"batch_id": "batch_1_abcdef01", "target_count": 5, "start_count": 0, "total": 5,
           "provider": "groq", "model": "g-large", "status": "completed", "running": False}
    state = BatchState.from_dict(old)
    assert (state.requested_provider, state.requested_model) == ("groq", "g-large")
    record = state.history_record()
    assert (record["provider"], record["model"]) == ("groq", "g-large")
    state.set_samples_used([("cerebras", "c-small"), ("cerebras", "c-small"), ("groq", "g-large")])
    assert state.history_record()["model"] == "c-small" and state.history_record()["provider"] == "cerebras"
    assert state.models_used == {"cerebras/c-small": 2, "groq/g-large": 1}
    again = BatchState.from_dict(state.to_dict())
    assert (again.requested_provider, again.requested_model, again.model) == ("groq", "g-large", "c-small")


# -- rate and ETA ----------------------------------------------------------------------------------

def test_rate_and_eta_during_a_wait_count_the_wait(make_app, fake):
    client = make_app(FAST_BATCH).test_client()
    fake.latency = 0.01
    batch_id = start(client, target_count=12)
    wait_for(lambda: status(client, batch_id)["samples_generated"] >= 4)
    for model in ALL_MODELS:
        fake.always(model, slow_down(3))
    state = wait_for(lambda: (s := status(client, batch_id))["waiting_until"] and s["waits"] and s)
    stored = state["samples_generated"]
    assert state["running"] and stored < 12
    # a handful of samples in well under a second is not thousands per minute
    assert 0 < state["rate_per_minute"] <= stored * 6
    left = seconds_until(state["waits"][-1]["until"])
    assert state["eta_seconds"] is not None and state["eta_seconds"] >= left - 0.5
    assert state["eta_seconds"] >= (12 - stored) * 60 / state["rate_per_minute"]
    assert "waiting" in state["eta_note"] and "includes the wait" in state["eta_note"]
    for model in ALL_MODELS:
        fake.always(model, None)
    done = wait_for(lambda: finished(client, batch_id), timeout=30)
    assert done["status"] == "completed" and done["eta_seconds"] == 0 and done["eta_note"] is None
    assert done["errors"] == []


# -- health ------------------------------------------------------------------------------------------

def test_health_says_cooling_with_until_while_every_model_cools_and_disabled_after_a_401(make_app, fake):
    client = make_app().test_client()
    for model in ("g-large", "g-small"):
        fake.script(model, slow_down(30))
    response = client.post("/api/generate", json={**GENERATE, "provider": "groq"})
    assert response.status_code == 200 and response.get_json()["sample"]["provider"] == "cerebras"
    providers = client.get("/api/health").get_json()["providers"]
    groq = providers["groq"]
    assert groq["state"] == "cooling" and 20 < seconds_until(groq["until"]) <= 31
    assert groq["category"] == "rate_limit" and set(groq["models"]) == {"g-large", "g-small"}
    assert providers["cerebras"]["state"] == "ok"
    listed = client.get("/api/providers").get_json()["providers"]
    assert {p["id"]: p["state"] for p in listed} == {"groq": "cooling", "cerebras": "ok"}

    fake.always("c-large", cerebras_error(401, "Wrong API Key", "wrong_api_key"))
    assert client.post("/api/generate", json={**GENERATE, "provider": "cerebras"}).status_code == 503
    cerebras = client.get("/api/health").get_json()["providers"]["cerebras"]
    assert cerebras["state"] == "disabled" and cerebras["category"] == "authentication"
    assert "Wrong API Key" in cerebras["reason"] and "until" not in cerebras


def test_health_says_cooling_while_every_model_is_out_of_budget(make_app, fake):
    budget = {"rpm": 1}
    client = make_app({"providers": {"cerebras": {"models": [
        {"id": "c-large", "limits": budget}, {"id": "c-small", "limits": budget}]}}}).test_client()
    for _ in range(2):
        assert client.post("/api/generate", json={**GENERATE, "provider": "cerebras"}).status_code == 200
    cerebras = client.get("/api/health").get_json()["providers"]["cerebras"]
    assert cerebras["state"] == "cooling" and 0 < seconds_until(cerebras["until"]) <= 61
    assert {m: h["state"] for m, h in cerebras["models"].items()} == {"c-large": "out_of_budget",
                                                                      "c-small": "out_of_budget"}
    assert cerebras["models"]["c-large"]["window"] == "rpm"
    assert client.get("/api/health").get_json()["providers"]["groq"]["state"] == "ok"


def test_health_is_degraded_when_every_configured_provider_is_disabled(make_app, fake):
    client = make_app().test_client()
    for model in ("g-large", "g-small"):
        fake.always(model, groq_error(401, "Invalid API Key", "invalid_api_key"))
    for model in ("c-large", "c-small"):
        fake.always(model, cerebras_error(401, "Wrong API Key", "wrong_api_key"))
    assert client.get("/api/health").get_json()["status"] == "ok"
    assert client.post("/api/generate", json=GENERATE).status_code in (502, 503)
    health = client.get("/api/health").get_json()
    assert health["status"] == "degraded" and health["ready"] is False
    assert {p["state"] for p in health["providers"].values()} == {"disabled"}
    assert any(p.startswith("groq: authentication") for p in health["problems"])
    assert any("Wrong API Key" in p for p in health["problems"])
