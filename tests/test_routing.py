"""Routing: a request's or batch's own `models` order, the strategies (order, cheapest, fastest,
spread) and the cost at configured prices, against the local fake providers."""
from __future__ import annotations

import dataclasses
import math
import random
from collections import Counter
from typing import get_args

import pytest

from config.providers import STRATEGY_NAMES, StrategyName
from fallback.router import RoutingError
from fallback.strategies import STRATEGIES, Signals, arrange, draw_weighted
from simulator.server import Reply, groq_error
from tests.conftest import ManualClock, request, wait_for

SERVER_ERROR = groq_error(500, "Internal Server Error", type_="internal_server_error")
FAST_BATCH = {"batch": {"max_in_flight": 4, "max_wait_seconds": 2, "heartbeat_seconds": 0.2}}
# USD per million tokens: c-small is the cheapest, g-large the dearest.
PRICED = {"providers": {
    "groq": {"models": [{"id": "g-large", "price": {"input": 5.0, "output": 9.0}},
                        {"id": "g-small", "price": {"input": 1.0, "output": 2.0}}]},
    "cerebras": {"models": [{"id": "c-large", "price": {"input": 3.0, "output": 4.0}},
                            {"id": "c-small", "price": {"input": 0.1, "output": 0.2}}]}}}
PRICES = {"groq/g-large": (5.0, 9.0), "groq/g-small": (1.0, 2.0), "cerebras/c-large": (3.0, 4.0),
          "cerebras/c-small": (0.1, 0.2)}


def routed(**fields):
    """The standard test request with routing fields set."""
    return dataclasses.replace(request(), **fields)


def cost_of(row: dict) -> float:
    price_in, price_out = PRICES[f"{row['provider']}/{row['model']}"]
    return (row["prompt_tokens"] * price_in + row["completion_tokens"] * price_out) / 1e6


def generate(client, **body):
    return client.post("/api/generate", json={"topic": "Tort Law - Nuisance", "save": False, **body})


def finished(client, batch_id):
    state = client.get(f"/api/generate/batch/status?batch_id={batch_id}").get_json()
    return state if not state["running"] else None


# -- the table of strategies ------------------------------------------------------------------------

def test_the_strategy_table_and_the_configuration_name_the_same_strategies():
    assert tuple(STRATEGIES) == STRATEGY_NAMES == get_args(StrategyName)


def signals(cost=None, latency=None, headroom=None, seed=1) -> Signals:
    return Signals(cost=lambda p: (cost or {}).get(p, 0.0), latency=lambda p: (latency or {}).get(p),
                   headroom=lambda p: (headroom or {}).get(p, math.inf), rng=random.Random(seed))


PAIRS = [("groq", "a"), ("groq", "b"), ("cerebras", "c"), ("cerebras", "d")]


def test_each_strategy_orders_the_same_pairs_by_its_own_signal():
    assert arrange([PAIRS], "order", signals()) == PAIRS
    cheap = signals(cost={("groq", "a"): 3, ("groq", "b"): 1, ("cerebras", "c"): 2, ("cerebras", "d"): 1})
    assert arrange([PAIRS], "cheapest", cheap) == [("groq", "b"), ("cerebras", "d"), ("cerebras", "c"), ("groq", "a")]
    assert arrange([PAIRS], "cheapest", signals()) == PAIRS   # all free: ties keep the order
    fast = signals(latency={("groq", "a"): 2.0, ("groq", "b"): 0.5, ("cerebras", "c"): 1.0})
    # d is untried: assumed as fast as the median tried one (1.0), ahead of a tried one of that speed
    assert arrange([PAIRS], "fastest", fast) == [("groq", "b"), ("cerebras", "d"), ("cerebras", "c"), ("groq", "a")]
    assert arrange([PAIRS], "fastest", signals()) == PAIRS    # nothing measured: the order
    pinned = arrange([[("groq", "a")], PAIRS[1:]], "cheapest", cheap)
    assert pinned[0] == ("groq", "a") and sorted(pinned) == sorted(PAIRS)   # a requested model stays first


def test_spread_draws_providers_in_proportion_to_their_remaining_budget():
    budget = {("groq", "a"): 5, ("groq", "b"): 5, ("cerebras", "c"): 20, ("cerebras", "d"): 10}
    rng_signals = signals(headroom=budget, seed=4)
    firsts = Counter(arrange([PAIRS], "spread", rng_signals)[0][0] for _ in range(2000))
    assert 0.20 < firsts["groq"] / 2000 < 0.30   # 10 of 40
    order = arrange([PAIRS], "spread", rng_signals)
    assert sorted(order) == sorted(PAIRS) and order.index(("groq", "a")) < order.index(("groq", "b"))
    none_left = signals(headroom={**budget, ("cerebras", "c"): 0, ("cerebras", "d"): 0})
    assert all(arrange([PAIRS], "spread", none_left)[0][0] == "groq" for _ in range(50))
    shared = signals(headroom=budget, seed=5)
    shared.shared_headroom = lambda provider: 2 if provider == "cerebras" else math.inf   # a provider-wide cap
    firsts = Counter(arrange([PAIRS], "spread", shared)[0][0] for _ in range(2000))
    assert 0.78 < firsts["groq"] / 2000 < 0.88   # 10 of 12
    assert draw_weighted(["x", "y", "z"], {"x": 0.0, "y": math.inf, "z": 1.0}, random.Random(0)) == ["y", "z", "x"]


# -- a request's own order ------------------------------------------------------------------------------

def test_a_custom_order_is_tried_exactly_as_given(fake, make_engine):
    order = (("cerebras", "c-small"), ("groq", "g-small"))
    fake.script("c-small", SERVER_ERROR)
    result = make_engine().generate(routed(models=order))
    assert (result.provider, result.model) == ("groq", "g-small")
    assert fake.models_called() == ["c-small", "g-small"]
    fake.always("c-small", SERVER_ERROR)
    fake.always("g-small", SERVER_ERROR)
    with pytest.raises(RoutingError):
        make_engine().generate(routed(models=order))
    assert fake.models_called()[2:] == ["c-small", "g-small"]   # nothing appended after the list


def test_the_api_honours_a_custom_order_and_reports_it(client, fake):
    fake.always("c-large", SERVER_ERROR)
    response = generate(client, models=["cerebras/c-large", "groq/g-small", "cerebras/c-small"])
    body = response.get_json()
    assert response.status_code == 200, body
    assert fake.models_called() == ["c-large", "g-small"]
    assert body["model"] == "g-small" and body["models"] == ["cerebras/c-large", "groq/g-small", "cerebras/c-small"]
    assert body["strategy"] == "order"


@pytest.mark.parametrize("body, words", [
    ({"models": ["groq/g-large", "groq/nope"]}, ["models[1]", "'groq/nope'", "unknown model"]),
    ({"models": ["nowhere/g-large"]}, ["models[0]", "unknown provider", "'nowhere'"]),
    ({"models": ["g-large"]}, ["models[0]", '"provider/model"']),
    ({"models": ["groq/g-large", "groq/g-large"]}, ["models[1]", "appears twice"]),
    ({"models": []}, ["models", "at least 1"]),
    ({"models": "groq/g-large"}, ["models", "list"]),
    ({"models": [7]}, ["models.0", "string"]),
    ({"models": ["groq/g-large"] * 65}, ["models", "at most 64"]),
    ({"models": ["groq/g-large"], "provider": "groq"}, ["either models", "or provider/model"]),
    ({"strategy": "random"}, ["strategy", "'random'", "cheapest"]),
    ({"strategy": 3}, ["strategy"]),
])
def test_bad_routing_is_a_400_naming_it_and_changes_nothing(client, fake, body, words):
    for path, extra in (("/api/generate", {"topic": "Tort Law - Nuisance"}),
                        ("/api/generate/batch/start", {"target_count": 5})):
        response = client.post(path, json={**extra, **body})
        error = response.get_json()
        assert response.status_code == 400, error
        assert all(word in error["error"] for word in words), error["error"]
    assert fake.requests == []
    assert client.get("/api/generate/batch/history").get_json()["count"] == 0
    assert client.get("/api/stats").get_json()["total"] == 0


# -- strategies end to end ----------------------------------------------------------------------------

def test_cheapest_goes_to_the_cheapest_model_and_reports_the_cost(make_app, fake):
    client = make_app(PRICED).test_client()
    body = generate(client, strategy="cheapest").get_json()
    assert fake.models_called() == ["c-small"] and body["model"] == "c-small" and body["strategy"] == "cheapest"
    sample = body["sample"]
    assert body["cost_usd"] == pytest.approx(cost_of(sample)) and body["cost_usd"] > 0
    assert [a["cost_usd"] for a in body["attempts"]] == [body["cost_usd"]]
    fake.always("c-small", SERVER_ERROR)
    generate(client, strategy="cheapest", models=["groq/g-large", "groq/g-small", "cerebras/c-small"])
    assert fake.models_called()[1:] == ["c-small", "g-small"]   # cheapest within the given list


def test_fastest_moves_to_the_model_observed_fastest(make_engine, fake):
    engine = make_engine()
    fake.always("g-large", Reply(delay=0.3))
    fastest = routed(strategy="fastest")
    engine.generate(fastest)           # nothing measured: the configured order
    engine.generate(fastest)           # an untried model before the slow one
    assert fake.models_called() == ["g-large", "g-small"]
    for _ in range(3):
        engine.generate(fastest)
    assert fake.models_called()[2:] == ["g-small"] * 3
    assert engine.metrics.success_latency("groq", "g-large") >= 0.3 > engine.metrics.success_latency("groq", "g-small")


def test_spread_shares_load_by_remaining_budget(make_engine, fake):
    limits = {"providers": {"groq": {"models": [{"id": "g-large", "limits": {"rpm": 10}},
                                                {"id": "g-small", "limits": {"rpm": 10}}]},
                            "cerebras": {"models": [{"id": "c-large", "limits": {"rpm": 30}},
                                                    {"id": "c-small", "limits": {"rpm": 30}}]}}}
    # Minute windows as buckets (not paced evenly), so the reservations below can spend the budget at once.
    engine = make_engine(limits, strategy="spread", pacing={"steady_max_window_seconds": 1})
    router = engine.router
    firsts = Counter(router.candidates(prompt_tokens=100)[0][0] for _ in range(1000))
    assert 0.17 < firsts["groq"] / 1000 < 0.33            # 20 requests left of 80
    for _ in range(25):                                     # spend most of Cerebras' minute
        engine.limiter.reserve("cerebras", "c-large", 100)
        engine.limiter.reserve("cerebras", "c-small", 100)
    firsts = Counter(router.candidates(prompt_tokens=100)[0][0] for _ in range(1000))
    assert firsts["groq"] / 1000 > 0.6                     # 20 left against 10
    results = Counter(engine.generate(request()).provider for _ in range(20))
    assert results["groq"] >= 10   # about 2 in 3 expected (seeded: the same every run)


def test_spread_counts_a_cooling_model_as_no_budget(make_engine, fake):
    engine = make_engine(strategy="spread")
    fake.always("c-large", Reply(status=503, body={"error": {"message": "down"}}, headers={"retry-after": "30"}))
    fake.always("c-small", Reply(status=503, body={"error": {"message": "down"}}, headers={"retry-after": "30"}))
    for _ in range(3):   # until both Cerebras models are cooling
        try:
            engine.generate(routed(models=(("cerebras", "c-large"), ("cerebras", "c-small"))))
        except Exception:  # noqa: BLE001 - failing is the point here
            pass
    assert engine.model_state("cerebras", "c-large")["state"] == "cooling"
    assert engine.model_state("cerebras", "c-small")["state"] == "cooling"
    assert all(engine.router.candidates()[0][0] == "groq" for _ in range(50))


# -- batches ------------------------------------------------------------------------------------------

def test_a_batch_with_models_and_strategy_resumes_with_them_after_a_restart(make_app, fake, tmp_path):
    fake.latency = 0.05
    one_at_a_time = {**PRICED, "batch": {**FAST_BATCH["batch"], "max_in_flight": 1}}   # no probe to route around
    first = make_app(one_at_a_time, data_dir=tmp_path / "shared")
    client = first.test_client()
    started = client.post("/api/generate/batch/start", json={
        "target_count": 10, "models": ["groq/g-large", "cerebras/c-large"], "strategy": "cheapest"}).get_json()
    assert started["models"] == ["groq/g-large", "cerebras/c-large"] and started["strategy"] == "cheapest"
    batch_id = started["batch_id"]
    wait_for(lambda: client.get(f"/api/generate/batch/status?batch_id={batch_id}").get_json()
             ["samples_generated"] >= 3)
    first.extensions["services"].batches.shutdown()
    first.extensions["services"].store.close()
    before = len(fake.requests)

    second = make_app(one_at_a_time, data_dir=tmp_path / "shared")
    client2 = second.test_client()
    state = wait_for(lambda: finished(client2, batch_id), timeout=30)
    assert state["status"] == "completed" and state["resumed_count"] == 1
    assert state["requested_models"] == ["groq/g-large", "cerebras/c-large"] and state["strategy"] == "cheapest"
    assert len(fake.requests) > before
    # the cheaper of the two (not the cheapest of all, c-small; not the first listed), before and after the restart
    assert set(fake.models_called()) == {"c-large"}


def test_a_resumed_batch_whose_models_left_the_configuration_fails_saying_so(make_app, fake, tmp_path):
    fake.latency = 0.2
    first = make_app(FAST_BATCH, data_dir=tmp_path / "shared")
    batch_id = first.test_client().post("/api/generate/batch/start", json={
        "target_count": 40, "models": ["cerebras/c-small"]}).get_json()["batch_id"]
    first.extensions["services"].batches.shutdown()
    first.extensions["services"].store.close()
    fewer = {**FAST_BATCH, "providers": {"cerebras": {"models": [{"id": "c-large"}]}}}
    client = make_app(fewer, data_dir=tmp_path / "shared").test_client()
    state = client.get(f"/api/generate/batch/status?batch_id={batch_id}").get_json()
    assert state["status"] == "failed" and "cerebras/c-small" in state["final_error"]
    assert "configuration changed" in state["final_error"]


def test_batch_cost_matches_prices_times_the_stored_rows_usage(make_app, fake):
    app = make_app({**PRICED, **FAST_BATCH})
    client = app.test_client()
    frames = app.extensions["services"].batches.subscribe()
    batch_id = client.post("/api/generate/batch/start", json={"target_count": 12, "strategy": "spread"}).get_json()[
        "batch_id"]
    state = wait_for(lambda: finished(client, batch_id), timeout=30)
    rows = client.get(f"/api/batch/{batch_id}/samples").get_json()["samples"]
    assert len(rows) == 12 and len({r["provider"] for r in rows}) == 2   # spread reached both providers
    expected = sum(cost_of(r) for r in rows)
    assert expected > 0 and state["cost_usd"] == pytest.approx(expected, rel=1e-6)
    [record] = [b for b in client.get("/api/generate/batch/history").get_json()["batches"] if b["id"] == batch_id]
    assert record["cost_usd"] == state["cost_usd"] and record["strategy"] == "spread"
    costs = []
    while not frames.empty():
        costs.append(frames.get_nowait()["cost_usd"])
    assert costs[-1] == state["cost_usd"] and costs == sorted(costs)   # every frame carries the running cost
    attempts = client.get(f"/api/batch/{batch_id}/attempts").get_json()["attempts"]
    stored = [a for a in attempts if a["outcome"] == "success"]
    assert sum(a["cost_usd"] for a in stored) == pytest.approx(expected, rel=1e-6)


def test_the_configured_default_strategy_applies_and_api_models_lists_the_keys(make_app, fake):
    client = make_app({**PRICED, "engine": {"strategy": "cheapest"}}).test_client()
    body = generate(client).get_json()
    assert body["strategy"] == "cheapest" and body["model"] == "c-small"
    listed = client.get("/api/models").get_json()
    assert listed["strategies"] == list(STRATEGY_NAMES) and listed["default_strategy"] == "cheapest"
    keys = [m["key"] for m in listed["models"]]
    assert keys == ["groq/g-large", "groq/g-small", "cerebras/c-large", "cerebras/c-small"]
    assert generate(client, models=keys[::-1], strategy="order").get_json()["model"] == "c-small"
    started = client.post("/api/generate/batch/start", json={"target_count": 2}).get_json()
    assert started["strategy"] == "cheapest" and started["models"] is None   # the default, saved with the batch
    client.post("/api/generate/batch/stop", json={})


def test_spread_counts_a_budget_learned_for_the_whole_provider(make_engine, fake):
    clock = ManualClock(0.0)
    limits = {"providers": {"groq": {"models": [{"id": "g-large", "limits": {"rpm": 30}},
                                                {"id": "g-small", "limits": {"rpm": 30}}]},
                            "cerebras": {"models": [{"id": "c-large", "limits": {"rpm": 30}},
                                                    {"id": "c-small", "limits": {"rpm": 30}}]}}}
    engine = make_engine(limits, clock=clock, strategy="spread")
    limiter = engine.limiter

    def send(model):
        while not hasattr(reservation := limiter.reserve("groq", model, 100), "settled"):
            clock.advance(float(reservation))
        limiter.settle(reservation, 100)
        return reservation

    assert limiter.shared_snapshot("groq") == {}
    before = Counter(engine.router.candidates(prompt_tokens=100)[0][0] for _ in range(1000))
    assert 0.4 < before["groq"] / 1000 < 0.6                  # 60 against 60
    for model in ("g-large", "g-large", "g-small", "g-small"):
        send(model)
    clock.advance(0.5)
    late = [send("g-large"), send("g-small")]
    limiter.rate_limited(late[0], 8.0, "Rate limit reached on requests per minute (RPM)")   # both refused until
    limiter.rate_limited(late[1], 7.99, "Rate limit reached on requests per minute (RPM)")  # the same moment
    shared = limiter.shared_snapshot("groq")
    assert set(shared) == {"rpm"} and shared["rpm"]["limit"] < 60
    after = Counter(engine.router.candidates(prompt_tokens=100)[0][0] for _ in range(1000))
    assert after["groq"] < before["groq"] * 0.5               # Groq's shared budget caps its weight
