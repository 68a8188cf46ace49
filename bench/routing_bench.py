"""Routing strategies: what ordering costs per sample, and what each strategy buys.

Run: `make bench`, or `.venv/bin/python bench/routing_bench.py`.

1. Overhead: the router with the shipped model lists (the 11 current models, limits lifted) and a call that
   returns at once, per strategy: the time to plan, order and reserve, per sample.
2. Cost: real SDK clients against the local fake server, shipped prices and completion budgets,
   `order` against `cheapest`: USD per sample at configured prices.
3. Latency: the fake answers the configured first model in 200 ms and the others in 20 ms;
   `order` against `fastest`: mean seconds per sample.
4. Spread: Groq's models admit 10 requests a minute each, Cerebras' 30 (time scaled: a minute
   lasts 6 s): the share of samples each provider gets under `spread` against its share of the
   budget.
"""
from __future__ import annotations

import dataclasses
import random
import statistics
import time
from collections import Counter

from config.catalog import find_topic
from config.providers import SHIPPED_CONFIG, load_config
from generation.engine import GenerationEngine, GenerationRequest
from providers.client import Completion
from simulator.server import FakeProviderServer, Reply

import yaml

TOPIC = find_topic("Contract Law - Misrepresentation")
REQUEST = GenerationRequest(TOPIC, "intermediate", "case_analysis")
SHIPPED = yaml.safe_load(SHIPPED_CONFIG.read_text(encoding="utf-8"))["providers"]


def shipped_models(provider: str, **limits: int) -> list[dict]:
    """The shipped list of `provider` (ids, prices, budgets), with these limits instead."""
    return [{**model, "limits": limits, "legacy": False} for model in SHIPPED[provider]["models"]
            if not model.get("legacy")]


def engine_for(env: dict[str, str], groq_limits: dict, cerebras_limits: dict, **engine) -> GenerationEngine:
    config = load_config(overrides={
        "engine": {"cooldowns": {"server_error": 0, "rate_limit": 0}, **engine},
        "providers": {"groq": {"models": shipped_models("groq", **groq_limits)},
                      "cerebras": {"models": shipped_models("cerebras", **cerebras_limits)}}})
    return GenerationEngine(config, env, rng=random.Random(1))


def overhead(runs: int = 5000) -> dict[str, float]:
    env = {"GROQ_API_KEY": "gsk_bench", "CEREBRAS_API_KEY": "csk-bench"}
    lifted = {"rpd": 10**9, "tpd": 10**12}   # day windows: read by spread, never in the way (no minute pacing)
    out = {}
    for strategy in ("order", "cheapest", "fastest", "spread"):
        engine = engine_for(env, lifted, lifted)
        for pair in [(p, m.id) for p, c in engine.providers.items() for m in c.config.models][::2]:
            engine.metrics.record_attempt(*pair, category=None, latency=random.random())   # some measured
        completion = Completion("{}", "groq", "x", 100, 200, 0.0)
        ok = lambda client, model: (None, completion)  # noqa: E731
        started = time.perf_counter()
        for _ in range(runs):
            engine.router.run(ok, prompt_tokens=400, strategy=strategy)
        out[strategy] = (time.perf_counter() - started) / runs * 1e6
    return out


def run_samples(fake: FakeProviderServer, engine: GenerationEngine, strategy: str, samples: int,
                max_wait: float = 0.0) -> list:
    request = dataclasses.replace(REQUEST, strategy=strategy)
    return [engine.generate(request, max_wait=max_wait) for _ in range(samples)]


def env_for(fake: FakeProviderServer) -> dict[str, str]:
    return {"GROQ_API_KEY": "gsk_bench", "CEREBRAS_API_KEY": "csk-bench",
            "GROQ_BASE_URL": fake.url, "CEREBRAS_BASE_URL": fake.url}


def cost(samples: int = 30) -> dict[str, tuple[float, Counter]]:
    out = {}
    lifted = {"rpm": 10**6, "tpm": 10**9}
    for strategy in ("order", "cheapest"):
        with FakeProviderServer(seed=2) as fake:
            engine = engine_for(env_for(fake), lifted, lifted)
            results = run_samples(fake, engine, strategy, samples)
            out[strategy] = (statistics.mean(r.cost_usd for r in results),
                             Counter(f"{r.provider}/{r.model}" for r in results))
    return out


def latency(samples: int = 20) -> dict[str, float]:
    out = {}
    lifted = {"rpm": 10**6, "tpm": 10**9}
    for strategy in ("order", "fastest"):
        with FakeProviderServer(seed=3, latency=0.02) as fake:
            engine = engine_for(env_for(fake), lifted, lifted)
            first = engine.config.providers["groq"].models[0].id
            fake.always(first, Reply(delay=0.18))
            started = time.perf_counter()
            run_samples(fake, engine, strategy, samples)
            out[strategy] = (time.perf_counter() - started) / samples
    return out


def spread(samples: int = 60) -> tuple[Counter, dict[str, float]]:
    with FakeProviderServer(seed=4) as fake:
        engine = engine_for(env_for(fake), {"rpm": 10, "tpm": 10**9}, {"rpm": 30, "tpm": 10**9}, max_attempts=16,
                            pacing={"time_scale": 0.1})   # a minute lasts 6 s
        budget = {name: 10 * len(c.config.models) if name == "groq" else 30 * len(c.config.models)
                  for name, c in engine.providers.items()}
        results = run_samples(fake, engine, "spread", samples, max_wait=10)
        total = sum(budget.values())
        return Counter(r.provider for r in results), {k: v / total for k, v in budget.items()}


def main() -> None:
    for strategy, micros in overhead().items():
        print(f"router overhead with strategy {strategy:8s} (11 shipped models): {micros:6.1f} us per sample")
    for strategy, (usd, used) in cost().items():
        top = ", ".join(f"{m} {n}" for m, n in used.most_common(2))
        print(f"cost per sample at shipped prices, strategy {strategy:8s}: ${usd:.6f} ({top})")
    for strategy, seconds in latency().items():
        print(f"mean time per sample, first model slow (200 ms vs 20 ms), strategy {strategy:8s}: "
              f"{seconds * 1000:.0f} ms")
    used, share = spread()
    total = sum(used.values())
    print("spread, 60 samples: " + ", ".join(
        f"{name} {used[name]} ({used[name] / total:.0%} of samples, {share[name]:.0%} of the budget)" for name in share))


if __name__ == "__main__":
    main()
