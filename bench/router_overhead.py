"""Router overhead per decision, and the time from a model failing to the next good sample.

Run: `make bench`, or `.venv/bin/python bench/router_overhead.py`.

1. Overhead: the router runs with a call that returns at once (no network, no parsing), so the
   time measured is choosing a candidate, reserving budget, classifying a failure, deciding,
   cooling down, recording metrics and events. Reported per decision.
2. Failover: real SDK clients against the local fake server. The first model answers 503; the
   figure is from the moment that failure reaches the router to the moment the next model's
   sample has been parsed and validated (one more HTTP round trip included).
"""
from __future__ import annotations

import random
import statistics
import time


import httpx
import groq

from config.catalog import find_topic
from generation.engine import GenerationEngine, GenerationRequest
from config.providers import load_config
from providers.client import Completion
from generation.parsing import parse_sample
from simulator.server import FakeProviderServer, groq_error

TOPIC = find_topic("Contract Law - Misrepresentation")
REQUEST = GenerationRequest(TOPIC, "intermediate", "case_analysis", "groq")
MODELS = [{"id": f"m{i}", "limits": {"rpm": 10**9, "tpm": 10**12}} for i in range(4)]


def config(**engine):
    return load_config(overrides={
        "engine": {"cooldowns": {"server_error": 0, "rate_limit": 0}, **engine},
        "providers": {"groq": {"models": MODELS, "timeouts": {"connect": 2, "read": 10}},
                      "cerebras": {"models": MODELS}}})


def rate_limit_error() -> Exception:
    request = httpx.Request("POST", "http://bench.invalid/openai/v1/chat/completions")
    response = httpx.Response(429, headers={"retry-after": "0"}, request=request,
                              json={"error": {"message": "Rate limit reached", "code": "rate_limit_exceeded"}})
    return groq.RateLimitError("Error code: 429", response=response, body=response.json())


def overhead(runs: int = 20000) -> tuple[float, float]:
    env = {"GROQ_API_KEY": "gsk_bench", "CEREBRAS_API_KEY": "csk-bench"}
    engine = GenerationEngine(config(), env, rng=random.Random(1))
    completion = Completion("{}", "groq", "m0", 100, 200, 0.0)
    ok = lambda client, model: (None, completion)  # noqa: E731
    started = time.perf_counter()
    for _ in range(runs):
        engine.router.run(ok, prompt_tokens=400, provider="groq")
    success_us = (time.perf_counter() - started) / runs * 1e6

    error = rate_limit_error()
    state = {"n": 0}

    def fail_then_ok(client, model):
        state["n"] += 1
        if state["n"] % 2:
            raise error
        return None, completion

    started = time.perf_counter()
    for _ in range(runs):
        engine.router.run(fail_then_ok, prompt_tokens=400, provider="groq")
    failover_us = (time.perf_counter() - started) / runs * 1e6
    return success_us, failover_us / 2  # two decisions per run


def failover(runs: int = 200) -> list[float]:
    with FakeProviderServer(seed=1) as fake:
        env = {"GROQ_API_KEY": "gsk_bench", "CEREBRAS_API_KEY": "csk-bench",
               "GROQ_BASE_URL": fake.url, "CEREBRAS_BASE_URL": fake.url}
        engine = GenerationEngine(config(), env, rng=random.Random(1))
        gaps = []
        for _ in range(runs):
            fake.script("m0", groq_error(503, "Service Unavailable"))
            marks: dict[str, float] = {}

            def call(client, model):
                try:
                    completion = client.complete(model, messages)
                except Exception:
                    marks["failed"] = time.perf_counter()
                    raise
                value = parse_sample(completion.text, REQUEST.spec)
                marks["ok"] = time.perf_counter()
                return value, completion

            from generation.prompts import build_messages
            messages = build_messages(REQUEST.spec)
            engine.router.run(call, prompt_tokens=400, provider="groq")
            gaps.append(marks["ok"] - marks["failed"])
        return gaps


def main() -> None:
    success_us, decision_us = overhead()
    print(f"router overhead, success on first model: {success_us:.1f} us per sample")
    print(f"router overhead per failure decision (classify + decide + cool + record): {decision_us:.1f} us")
    gaps = sorted(failover())
    p95 = gaps[int(0.95 * len(gaps)) - 1]
    print(f"model failure -> next successful sample (fake server, 0 ms model latency, {len(gaps)} runs): "
          f"median {statistics.median(gaps) * 1000:.2f} ms, p95 {p95 * 1000:.2f} ms")


if __name__ == "__main__":
    main()
