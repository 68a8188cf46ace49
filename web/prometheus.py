"""Provider and model figures for people (`/api/stats/providers`) and for Prometheus (`/metrics`):
switch frequency, failures by category, average tokens, response time, success rate, cost;
pacing: limits learned from 429s with their scope, and each model's learned completion budget;
routing strategies: the samples each produced and their cost."""
from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

_STARTED = time.time()


def provider_stats(svc: Any) -> dict[str, Any]:
    engine = svc.engine
    hours = max((time.time() - svc.started) / 3600, 1e-9)
    providers: dict[str, Any] = {}
    for name, client in engine.providers.items():
        models = {}
        learned = engine.learned_limits(name)
        for model in client.config.models:
            stats = engine.metrics.model_report(name, model.id)
            state = engine.model_state(name, model.id)
            tokens = stats["prompt_tokens"] + stats["completion_tokens"]
            cost = (stats["prompt_tokens"] * model.price.input + stats["completion_tokens"] * model.price.output) / 1e6
            switches = stats["switches_from"]
            models[model.id] = {
                "state": state["state"], "until": state.get("until"), "category": state.get("category"),
                "attempts": stats["attempts"], "successes": stats["successes"], "failures": stats["failures"],
                "success_rate": stats["success_rate"], "failures_by_category": stats["failures_by_category"],
                "latency_seconds": stats["latency_seconds"],
                "avg_tokens": round(tokens / stats["successes"], 1) if stats["successes"] else None,
                "prompt_tokens": stats["prompt_tokens"], "completion_tokens": stats["completion_tokens"],
                "cost_usd": round(cost, 6), "switches_away": switches, "switches_to": stats["switches_to"],
                "switches_away_per_hour": round(switches / hours, 2),
                "completion_budget": engine.completion_budget(name, model),
                "learned_limits": [entry for entry in learned if entry["model"] == model.id],
            }
        providers[name] = {"name": client.display_name, "configured": client.configured,
                           "state": engine.provider_state(name)["state"], "models": models,
                           "learned_limits": learned}
    return {"providers": providers, "switches_total": engine.metrics.switch_count,
            "recent_switches": engine.metrics.switches()[-20:], "strategies": engine.metrics.strategy_report()}


class _Collector:
    def __init__(self, svc: Any):
        self.svc = svc

    def collect(self):
        svc = self.svc
        engine = svc.engine
        attempts = CounterMetricFamily("llm_attempts", "Calls to a model by outcome and failure category",
                                       labels=["provider", "model", "outcome", "category"])
        duration = HistogramMetricFamily("llm_request_duration_seconds", "Call latency by outcome, every call",
                                         labels=["provider", "model", "outcome"])
        latency = GaugeMetricFamily("llm_latency_seconds", "Recent call latency percentiles (last 1000 calls); "
                                    "llm_request_duration_seconds is the histogram to aggregate",
                                    labels=["provider", "model", "quantile"])
        tokens = CounterMetricFamily("llm_tokens", "Tokens reported by the providers",
                                     labels=["provider", "model", "kind"])
        cost = CounterMetricFamily("llm_cost_usd", "Estimated spend at configured prices", labels=["provider", "model"])
        up = GaugeMetricFamily("llm_model_available", "1 when the model may be tried now", labels=["provider", "model"])
        switches = CounterMetricFamily("llm_switches", "Moves away from a model", labels=["provider", "model"])
        learned_limit = GaugeMetricFamily(
            "llm_learned_limit", "Limit learned from 429s, per window (rpm, tpm); scope provider: shared by "
            "the provider's models (model label empty)", labels=["provider", "model", "scope", "window"])
        budget = GaugeMetricFamily("llm_completion_budget_tokens", "max_completion_tokens sent now, learned "
                                   "from the model's answers", labels=["provider", "model"])
        truncated = CounterMetricFamily("llm_completion_truncated", "Answers cut off at the budget "
                                        "(finish_reason: length)", labels=["provider", "model"])
        for name, client in engine.providers.items():
            for entry in engine.learned_limits(name):
                learned_limit.add_metric([name, entry["model"] or "", entry["scope"], entry["window"]], entry["limit"])
            for model in client.config.models:
                stats = engine.metrics.model_report(name, model.id)
                if stats["successes"]:
                    attempts.add_metric([name, model.id, "success", ""], stats["successes"])
                for category, count in stats["failures_by_category"].items():
                    attempts.add_metric([name, model.id, "failure", category], count)
                for outcome, histogram in engine.metrics.latency_histograms(name, model.id).items():
                    buckets = [(_bound(bound), count) for bound, count in histogram.cumulative()]
                    duration.add_metric([name, model.id, outcome], buckets, histogram.total)
                for quantile, value in stats["latency_seconds"].items():
                    if value is not None:
                        latency.add_metric([name, model.id, quantile], value)
                tokens.add_metric([name, model.id, "prompt"], stats["prompt_tokens"])
                tokens.add_metric([name, model.id, "completion"], stats["completion_tokens"])
                cost.add_metric([name, model.id], (stats["prompt_tokens"] * model.price.input
                                                   + stats["completion_tokens"] * model.price.output) / 1e6)
                if client.configured:
                    up.add_metric([name, model.id], 1.0 if engine.model_state(name, model.id)["state"] == "ok" else 0.0)
                switches.add_metric([name, model.id], stats["switches_from"])
                completion = engine.completion_budget(name, model)
                budget.add_metric([name, model.id], completion["budget"])
                truncated.add_metric([name, model.id], completion["truncated"])
        yield from (attempts, duration, latency, tokens, cost, up, switches, learned_limit, budget, truncated)
        yield from _strategy_families(engine.metrics.strategy_report())
        samples = GaugeMetricFamily("dataset_samples", "Samples in the dataset")
        samples.add_metric([], svc.store.count())
        yield samples
        running = GaugeMetricFamily("batch_running", "Batches running now")
        running.add_metric([], len(svc.batches.running_ids()))
        yield running


def _strategy_families(report: dict[str, dict[str, float]]) -> tuple[CounterMetricFamily, CounterMetricFamily]:
    samples = CounterMetricFamily("llm_strategy_samples", "Samples produced, by the routing strategy that "
                                  "ordered their run (order, cheapest, fastest, spread)", labels=["strategy"])
    cost = CounterMetricFamily("llm_strategy_cost_usd", "Estimated spend on those samples at configured prices",
                               labels=["strategy"])
    for strategy, totals in report.items():
        samples.add_metric([strategy], totals["samples"])
        cost.add_metric([strategy], totals["cost_usd"])
    return samples, cost


def _bound(seconds: float) -> str:
    """A bucket's `le` label as Prometheus writes it ("0.5", "10.0", "+Inf")."""
    return "+Inf" if seconds == float("inf") else repr(float(seconds))


def prometheus_text(svc: Any) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(svc))
    return generate_latest(registry)
