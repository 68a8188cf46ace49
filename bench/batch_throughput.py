"""Batch throughput against rate-limited fake providers, as a fraction of the limits' ceiling.

Run: `make bench`, or `.venv/bin/python bench/batch_throughput.py [minutes]` (default 2).

Two fake providers (Groq and Cerebras wire formats), two models each, every model limited to
RPM requests per sliding minute (answering 429 with retry-after beyond it) and answering after
0.3-0.8 s. A run lasts just under N whole minutes, so the sliding windows allow exactly
models x RPM x N samples: that is the ceiling. Three
designs run side by side, each against its own servers:

* this worker, limits known from configuration;
* this worker, limits unknown (it learns from 429s and their retry-after);
* the old design: one request at a time, a fixed per-provider delay (Groq 25/min, Cerebras
  600/min), a model excluded for the rest of the batch after its first failure.
"""
from __future__ import annotations

import random
import sys
import tempfile
import threading
import time
from pathlib import Path


from batch.manager import BatchManager
from config.catalog import TOPICS
from generation.engine import GenerationEngine
from errors import InvalidOutput
from generation.prompts import SampleSpec, build_messages
from config.providers import load_config
from providers.client import build_providers
from generation.parsing import parse_sample
from simulator.server import FakeProviderServer
from storage.store import Store

RPM = 30
MODELS = {"groq": ["g1", "g2"], "cerebras": ["c1", "c2"]}
OLD_DELAY = {"groq": 60 / 25, "cerebras": 60 / 600}


def servers(seed: int) -> dict[str, FakeProviderServer]:
    out = {}
    for offset, (provider, models) in enumerate(MODELS.items()):
        rng = random.Random(seed + offset)
        server = FakeProviderServer(latency=lambda rng=rng: rng.uniform(0.3, 0.8), seed=seed + offset).start()
        for model in models:
            server.limit(model, rpm=RPM)
        out[provider] = server
    return out


def config(known_limits: bool):
    limits = {"rpm": RPM} if known_limits else {}
    return load_config(overrides={"batch": {"max_in_flight": 16, "max_wait_seconds": 5}, "providers": {
        p: {"models": [{"id": m, "limits": limits} for m in models]} for p, models in MODELS.items()}})


def env_for(fakes: dict[str, FakeProviderServer]) -> dict[str, str]:
    return {"GROQ_API_KEY": "gsk_bench", "CEREBRAS_API_KEY": "csk-bench",
            "GROQ_BASE_URL": fakes["groq"].url, "CEREBRAS_BASE_URL": fakes["cerebras"].url}


def run_worker(known_limits: bool, seconds: float, out: dict, seed: int) -> None:
    fakes = servers(seed)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "bench.sqlite3")
        cfg = config(known_limits)
        engine = GenerationEngine(cfg, env_for(fakes))
        manager = BatchManager(engine=engine, store=store, config=cfg)
        manager.start(target_count=1_000_000)
        time.sleep(seconds)
        produced = store.count()
        manager.stop()
        manager.shutdown()
        store.close()
    out.update(samples=produced, rejected_429=sum(f.statuses[429] for f in fakes.values()),
               requests=sum(len(f.requests) for f in fakes.values()))
    for fake in fakes.values():
        fake.stop()


def run_old(seconds: float, out: dict, seed: int) -> None:
    """One request at a time, fixed delay per provider, a model excluded after one failure."""
    fakes = servers(seed)
    cfg = config(known_limits=False)
    clients = build_providers(cfg.providers, env_for(fakes))
    deadline = time.monotonic() + seconds
    produced, excluded, index = 0, set(), 0
    for provider in ("groq", "cerebras"):
        client = clients[provider]
        for model in client.config.models:
            while time.monotonic() < deadline and model.id not in excluded:
                topic = TOPICS[index % len(TOPICS)]
                index += 1
                spec = SampleSpec(topic, topic.difficulty, "case_analysis")
                try:
                    completion = client.complete(model, build_messages(spec))
                    parse_sample(completion.text, spec)
                    produced += 1
                except InvalidOutput:
                    pass
                except Exception:
                    excluded.add(model.id)   # the old system's rule: one failure, out for the batch
                time.sleep(OLD_DELAY[provider])
    out.update(samples=produced, rejected_429=sum(f.statuses[429] for f in fakes.values()),
               requests=sum(len(f.requests) for f in fakes.values()), excluded=sorted(excluded))
    for fake in fakes.values():
        fake.stop()


def main() -> None:
    minutes = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    seconds = minutes * 60 - 3.0   # the last minute's requests have time to complete
    ceiling = sum(len(m) for m in MODELS.values()) * RPM * minutes
    results: dict[str, dict] = {"worker, limits known": {}, "worker, limits unknown": {}, "old design": {}}
    threads = [
        threading.Thread(target=run_worker, args=(True, seconds, results["worker, limits known"], 10)),
        threading.Thread(target=run_worker, args=(False, seconds, results["worker, limits unknown"], 20)),
        threading.Thread(target=run_old, args=(seconds, results["old design"], 30)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(f"{len(MODELS)} fake providers x 2 models, {RPM} requests/min each, latency 0.3-0.8 s, {seconds:.0f} s run;"
          f" ceiling {ceiling:.0f} samples")
    for name, result in results.items():
        rate = result["samples"] / minutes
        print(f"{name:<24} {result['samples']:>5} samples = {rate:6.1f}/min = {result['samples'] / ceiling:5.2f} of "
              f"ceiling; 429s received: {result['rejected_429']}; requests sent: {result['requests']}")


if __name__ == "__main__":
    main()
