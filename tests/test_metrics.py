"""Latency metrics: the histogram's buckets, and `/metrics` as Prometheus parses it."""
from __future__ import annotations

import math

from prometheus_client.parser import text_string_to_metric_families

from fallback.metrics import LATENCY_BUCKETS, LatencyHistogram, Metrics

FAKE_LATENCY = 0.12  # seconds the fake provider waits before answering


def test_histogram_buckets_are_upper_bounds_and_cumulative() -> None:
    histogram = LatencyHistogram()
    for seconds in (0.05, 0.1, 0.11, 3.0, 500.0):
        histogram.observe(seconds)
    cumulative = dict(histogram.cumulative())
    assert cumulative[0.1] == 2            # a value on a bound falls in that bucket
    assert cumulative[0.25] == 3 and cumulative[5.0] == 4 and cumulative[120.0] == 4
    assert cumulative[math.inf] == histogram.count == 5
    assert histogram.total == 0.05 + 0.1 + 0.11 + 3.0 + 500.0
    assert list(cumulative)[:-1] == list(LATENCY_BUCKETS)


def test_histograms_are_kept_per_model_and_outcome() -> None:
    metrics = Metrics()
    metrics.record_attempt("groq", "a", category=None, latency=0.3)
    metrics.record_attempt("groq", "a", category="timeout", latency=30.0)
    metrics.record_attempt("groq", "a", category="rate_limit", latency=None)  # refused before any call
    metrics.record_attempt("groq", "b", category=None, latency=1.0)
    by_outcome = metrics.latency_histograms("groq", "a")
    assert {k: h.count for k, h in by_outcome.items()} == {"failure": 1, "success": 1}
    assert metrics.latency_histograms("groq", "b")["success"].total == 1.0
    assert metrics.latency_histograms("cerebras", "a") == {}
    by_outcome["success"].observe(1.0)  # a copy: the recorded figures do not change
    assert metrics.latency_histograms("groq", "a")["success"].count == 1


def _samples(text: str, family_name: str) -> list:
    families = {family.name: family for family in text_string_to_metric_families(text)}
    return families[family_name].samples


def test_metrics_exports_a_latency_histogram_per_model(make_app, fake) -> None:
    fake.latency = FAKE_LATENCY
    client = make_app(start_batches=False).test_client()
    generations = 4
    for _ in range(generations):
        response = client.post("/api/generate", json={"practice_area": "Tort Law", "topic": "Nuisance",
                                                      "difficulty": "basic", "provider": "groq", "model": "g-small"})
        assert response.status_code == 200 and response.get_json()["model"] == "g-small"

    text = client.get("/metrics").get_data(as_text=True)
    families = {family.name: family for family in text_string_to_metric_families(text)}
    assert families["llm_request_duration_seconds"].type == "histogram"
    series = [s for s in families["llm_request_duration_seconds"].samples
              if s.labels.get("model") == "g-small" and s.labels.get("provider") == "groq"]
    count = next(s.value for s in series if s.name == "llm_request_duration_seconds_count")
    total = next(s.value for s in series if s.name == "llm_request_duration_seconds_sum")
    buckets = [(float(s.labels["le"]), s.value) for s in series if s.name == "llm_request_duration_seconds_bucket"]
    assert {s.labels["outcome"] for s in series} == {"success"}
    assert count == generations and total >= generations * FAKE_LATENCY
    assert [bound for bound, _ in buckets] == [*LATENCY_BUCKETS, math.inf]
    assert all(a <= b for (_, a), (_, b) in zip(buckets, buckets[1:]))     # cumulative: never decreasing
    assert buckets[0] == (0.1, 0) and buckets[-1] == (math.inf, generations)  # every call took >= 0.12 s
    # models that were never called have no histogram series; the other families are still there
    assert not any(s.labels.get("model") == "c-large" for s in families["llm_request_duration_seconds"].samples)
    assert "llm_attempts" in families and "dataset_samples" in families


def test_each_app_counts_only_its_own_calls(make_app, fake) -> None:
    first, second = make_app(start_batches=False).test_client(), make_app(start_batches=False).test_client()
    body = {"practice_area": "Tort Law", "topic": "Nuisance", "difficulty": "basic", "provider": "groq"}
    assert first.post("/api/generate", json=body).status_code == 200
    counts = [[s.value for s in _samples(c.get("/metrics").get_data(as_text=True), "llm_request_duration_seconds")
               if s.name.endswith("_count")] for c in (first, second)]
    assert counts == [[1.0], []]


def test_metrics_count_samples_and_cost_per_routing_strategy(make_app, fake) -> None:
    """Each sample counts under the strategy that ordered its run (the configured `order` when the
    request names none), with its cost at configured prices, in /metrics and /api/stats/providers."""
    priced = {"providers": {"groq": {"models": [{"id": "g-large", "limits": {}, "price": {"input": 1.0, "output": 2.0}},
                                                {"id": "g-small", "limits": {}, "price": {"input": 0.5, "output": 0.5}}]}}}
    client = make_app(priced, start_batches=False).test_client()
    body = {"practice_area": "Tort Law", "topic": "Nuisance", "difficulty": "basic", "provider": "groq", "save": False}
    costs: dict[str, float] = {"order": 0.0, "cheapest": 0.0}
    for strategy, count in (("cheapest", 3), (None, 2)):
        for _ in range(count):
            response = client.post("/api/generate", json={**body, **({"strategy": strategy} if strategy else {})})
            answer = response.get_json()
            assert response.status_code == 200, answer
            costs[strategy or "order"] += answer["cost_usd"]
            assert answer["model"] == ("g-small" if strategy == "cheapest" else "g-large")

    text = client.get("/metrics").get_data(as_text=True)
    samples = {s.labels["strategy"]: s.value for s in _samples(text, "llm_strategy_samples")}
    spent = {s.labels["strategy"]: s.value for s in _samples(text, "llm_strategy_cost_usd")}
    assert samples == {"cheapest": 3, "order": 2}
    assert spent.keys() == costs.keys() and all(math.isclose(spent[k], costs[k], rel_tol=1e-3) for k in costs)
    assert 0 < spent["cheapest"] / 3 < spent["order"] / 2                    # g-small is the cheaper model
    stats = client.get("/api/stats/providers").get_json()["strategies"]
    assert {k: v["samples"] for k, v in stats.items()} == samples
