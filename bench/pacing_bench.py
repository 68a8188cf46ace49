"""Pacing against fake providers (issue 8): samples per window against the ceiling the limits
allow, and the 429s it cost, beside the figures the issue reported before this work.

Run: `.venv/bin/python bench/pacing_bench.py [time_scale] [scenario ...]` (default 0.5, all
scenarios; e.g. `bench/pacing_bench.py 0.5 2` runs scenario 2, whose run also gives scenario 3). Time is scaled: every
window, the providers' limits' windows, latency and the run lengths are multiplied by the scale
(`engine.pacing.time_scale` for the limiter, the fakes' own windows), so a 10-second window lasts
5 s at 0.5 and the whole bench takes a few minutes. Ratios and 429 counts are what matter; they
do not depend on the scale, except that at small scales the machine's own delays weigh more.

Scenarios, each a real batch (BatchManager, real SDK clients) against local fake providers:

1. Undeclared provider-wide limits: Groq 4 and Cerebras 10 requests per 10 s across all their
   models, below every configured limit; 0.5 s latency; a batch of 60.
1b. The same limits halving after a minute and recovering after two; three minutes.
2. Per-model limits as shipped (the fakes enforce each model's rpm and tpm from
   config/providers.yaml; Cerebras charges prompt + max_completion_tokens up front), answers of
   ~1,800 completion tokens, 150 s; the ceiling is what those limits allow at the tokens a sample
   really uses.
3. Steady flow: in scenario 2's run, the 5-second stretches without a new sample.
"""
from __future__ import annotations

import math
import random
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from batch.manager import BatchManager
from config.providers import AppConfig, load_config
from generation.engine import GenerationEngine
from simulator.server import FakeProviderServer
from storage.store import Store

WINDOW = 10.0                                   # the undeclared limits' window (unscaled seconds)
SHARED = {"groq": 4, "cerebras": 10}            # requests per WINDOW, across all of a provider's models
COMPLETION_TOKENS = 1800


@dataclass
class Run:
    started: float
    done: list[tuple[float, str]] = field(default_factory=list)   # (seconds since start, provider)
    rejected: dict[str, int] = field(default_factory=dict)
    status_log: list[tuple[float, int]] = field(default_factory=list)   # (t, 429s so far)
    learned: dict[str, Any] = field(default_factory=dict)
    budgets: dict[str, int] = field(default_factory=dict)


def fakes(scale: float, seed: int) -> dict[str, FakeProviderServer]:
    out = {}
    for offset, provider in enumerate(("groq", "cerebras")):
        rng = random.Random(seed + offset)
        server = FakeProviderServer(latency=lambda rng=rng: 0.5 * scale * rng.uniform(0.8, 1.2), seed=seed + offset)
        server.completion_tokens = lambda rng=rng: int(rng.gauss(COMPLETION_TOKENS, 120))
        out[provider] = server.start()
    return out


def config(scale: float) -> AppConfig:
    return load_config(overrides={
        "engine": {"pacing": {"time_scale": scale}},
        "batch": {"max_in_flight": 16, "max_wait_seconds": 30 * scale, "heartbeat_seconds": 1}})


def run_batch(cfg: AppConfig, servers: dict[str, FakeProviderServer], *, target: int, seconds: float | None = None,
              tick: Callable[[float], None] | None = None) -> Run:
    env = {"GROQ_API_KEY": "gsk_bench", "CEREBRAS_API_KEY": "csk-bench",
           "GROQ_BASE_URL": servers["groq"].url, "CEREBRAS_BASE_URL": servers["cerebras"].url}
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "bench.sqlite3")
        engine = GenerationEngine(cfg, env)
        run = Run(time.monotonic())
        lock = threading.Lock()
        generate = engine.generate

        def recorded(*args: Any, **kwargs: Any):
            result = generate(*args, **kwargs)
            with lock:
                run.done.append((time.monotonic() - run.started, result.provider))
            return result

        engine.generate = recorded  # type: ignore[method-assign]
        manager = BatchManager(engine=engine, store=store, config=cfg)
        manager.start(target_count=target)
        while True:
            now = time.monotonic() - run.started
            if tick is not None:
                tick(now)
            run.status_log.append((now, sum(s.statuses[429] for s in servers.values())))
            if store.count() >= target or (seconds is not None and now >= seconds):
                break
            time.sleep(0.05)
        manager.stop()
        manager.shutdown()
        store.close()
        run.rejected = {name: server.statuses[429] for name, server in servers.items()}
        run.learned = {name: engine.learned_limits(name) for name in servers}
        run.budgets = {f"{p}/{m.id}": engine.completion_budget(p, m)["budget"]
                       for p, client in engine.providers.items() for m in client.config.models}
    for server in servers.values():
        server.stop()
    return run


def scenario_1(scale: float) -> None:
    servers = fakes(scale, 11)
    for provider, requests in SHARED.items():
        servers[provider].shared_limit(provider, requests, WINDOW * scale)
    run = run_batch(config(scale), servers, target=60)
    elapsed = run.done[59][0] if len(run.done) >= 60 else run.done[-1][0]
    windows = elapsed / (WINDOW * scale)
    ceiling = sum(SHARED.values())
    per_window = len(run.done[:60]) / windows
    rejected = sum(run.rejected.values())
    print("Scenario 1: undeclared provider-wide limits (Groq 4, Cerebras 10 requests per 10 s), batch of 60")
    print(f"  now    : {per_window:5.2f} samples per window of a ceiling of {ceiling} = {per_window / ceiling:.2f}; "
          f"{rejected} x 429 ({run.rejected['groq']} Groq, {run.rejected['cerebras']} Cerebras) for 60 samples")
    for provider, entries in run.learned.items():
        for entry in entries:
            print(f"           learned {provider} {entry['scope']}{'' if entry['model'] is None else ' ' + entry['model']}"
                  f" {entry['window']} = {entry['limit']:.1f} per scaled minute "
                  f"(real {SHARED[provider] * 60 / WINDOW:.0f})")
    print("  before : reached the ceiling only by brute force: 124 x 429 for 60 samples (issue 8's reported figures)")
    print("  target : >= 0.90 of the ceiling, <= 15 x 429")


def scenario_1b(scale: float) -> None:
    servers = fakes(scale, 21)
    minute = 60 * scale
    changes = [(minute, 0.5), (2 * minute, 1.0)]
    applied: list[float] = []
    in_force = {p: [(0.0, float(r))] for p, r in SHARED.items()}

    def tick(now: float) -> None:
        for at, factor in changes:
            if now >= at and at not in applied:
                applied.append(at)
                for provider, requests in SHARED.items():
                    limit = max(1, round(requests * factor))
                    servers[provider].shared_limit(provider, limit, WINDOW * scale)
                    in_force[provider].append((now, float(limit)))

    for provider, requests in SHARED.items():
        servers[provider].shared_limit(provider, requests, WINDOW * scale)
    run = run_batch(config(scale), servers, target=100_000, seconds=3 * minute, tick=tick)
    window = WINDOW * scale
    print("Scenario 1b: the same limits halving after one minute and recovering after two; three minutes")

    def limit_at(provider: str, t: float) -> float:
        return [limit for at, limit in in_force[provider] if at <= t][-1]

    def rolling(t: float) -> tuple[float, float]:
        got = sum(1 for at, _ in run.done if t - window < at <= t)
        return got, sum(limit_at(p, t) for p in SHARED)

    for index, (at, factor) in enumerate(changes):
        end = changes[index + 1][0] if index + 1 < len(changes) else 3 * minute
        back = next((t for t in _steps(at + 0.5, end, 0.1) if rolling(t)[0] >= 0.9 * rolling(t)[1]
                     and t - window >= at), None)
        before = _rejected_at(run, at)
        after = _rejected_at(run, min(end, at + 2 * window))
        label = "halved   " if factor < 1 else "recovered"
        recovered = f"{(back - at) / window:.1f} windows" if back is not None else "not within the phase"
        print(f"  now    : {label} at {at / scale:5.0f} s (unscaled): >= 0.9 of the limit in force after {recovered}; "
              f"{after - before} x 429 in the two windows after the change")
    phases = [(0.0, changes[0][0]), (changes[0][0], changes[1][0]), (changes[1][0], 3 * minute)]
    for start, end in phases:
        got = sum(1 for at, _ in run.done if start + window <= at < end)
        allowed = sum(limit_at(p, start + window) for p in SHARED) * (end - start - window) / window
        print(f"           phase {start / scale:4.0f}-{end / scale:4.0f} s: {got} samples of {allowed:.0f} the limits "
              f"allowed after its first window = {got / allowed if allowed else 0:.2f}")
    print(f"           {sum(run.rejected.values())} x 429 in three minutes")
    print("  before : kept pace but drew 360 x 429 in three minutes (issue 8's reported figures)")
    print("  target : back to >= 0.9 of the limit in force within two windows of each change, a few 429s per change")


def _steps(start: float, end: float, step: float):
    t = start
    while t <= end:
        yield t
        t += step


def _rejected_at(run: Run, t: float) -> int:
    return max((count for at, count in run.status_log if at <= t), default=0)


def prompt_tokens(servers: dict[str, FakeProviderServer]) -> float:
    """The prompts' mean size as the fakes count it (characters / 4)."""
    sizes = [max(1, len("\n".join(str(m.get("content", "")) for m in r.body.get("messages", []))) // 4)
             for server in servers.values() for r in server.requests]
    return sum(sizes) / len(sizes)


def scenario_2_and_3(scale: float) -> None:
    servers = fakes(scale, 31)
    cfg = config(scale)
    for provider, server in servers.items():
        for model in cfg.providers[provider].models:
            server.limit(model.id, rpm=model.limits.rpm, tpm=model.limits.tpm, window=60 * scale)
    seconds = 150 * scale
    run = run_batch(cfg, servers, target=100_000, seconds=seconds)
    prompt = prompt_tokens(servers)
    ceiling = whole = 0.0   # per minute, every model at min(rpm, tpm / tokens a sample really uses)
    for provider in servers:
        for model in cfg.providers[provider].models:
            limits = model.limits
            per_minute = [float(limits.rpm)] if limits.rpm else []
            if limits.tpm:
                per_minute.append(limits.tpm / (prompt + COMPLETION_TOKENS))
            ceiling += min(per_minute) if per_minute else 0.0
            whole += math.floor(min(per_minute)) if per_minute else 0.0   # a window holds whole requests
    minutes = seconds / (60 * scale)
    per_minute = len(run.done) / minutes
    print("Scenario 2: per-model limits as shipped, Cerebras charging prompt + max_completion_tokens, "
          f"answers of ~{COMPLETION_TOKENS} completion tokens, 150 s")
    print(f"  now    : {per_minute:5.1f} samples per minute-window of {ceiling:.0f} the limits allow at the tokens a "
          f"sample really uses ({prompt:.0f} prompt + {COMPLETION_TOKENS} completion) = {per_minute / ceiling:.3f}; "
          f"{sum(run.rejected.values())} x 429")
    print(f"           (a sliding window holds whole requests: {whole:.0f} per window at most = "
          f"{per_minute / whole:.2f} of that)")
    budgets = sorted(set(run.budgets.values()))
    print(f"           learned completion budgets: {budgets[0]}-{budgets[-1]} tokens (configured 2,048-8,192)")
    print("  before : 123 of 196 = 0.63, 0 x 429 (issue 8's reported figures)")
    print("  target : >= 0.85 of the ceiling, 0 x 429")
    stretch = 5 * scale
    arrivals = [0.0] + [t for t, _ in run.done]
    frozen = [b - a for a, b in zip(arrivals, arrivals[1:]) if b - a >= stretch]
    intervals = int(seconds // stretch)
    empty = sum(1 for i in range(intervals) if not any(i * stretch <= t < (i + 1) * stretch for t in arrivals[1:]))
    print("Scenario 3: steady flow (scenario 2's run)")
    print(f"  now    : {empty} of {intervals} 5-second intervals without a new sample; longest gap "
          f"{max((b - a for a, b in zip(arrivals, arrivals[1:])), default=0) / scale:.1f} s (unscaled), "
          f"{len(frozen)} gaps of 5 s or more")
    print("  before : a window's budget spent in the first 2-5 s, then 40-55 s frozen (issue 8's reported figures)")
    print("  target : progress in every 5-second interval")


SCENARIOS: dict[str, Callable[[float], None]] = {"1": scenario_1, "1b": scenario_1b, "2": scenario_2_and_3}


def main() -> None:
    sys.stdout.reconfigure(line_buffering=True)   # type: ignore[attr-defined]
    scale = float(sys.argv[1]) if len(sys.argv) > 1 else 0.5
    chosen = sys.argv[2:] or list(SCENARIOS)
    unknown = [name for name in chosen if name not in SCENARIOS]
    if unknown:
        sys.exit(f"unknown scenario {', '.join(unknown)}: choose from {', '.join(SCENARIOS)} (2 includes 3)")
    print(f"Time scaled by {scale}: windows, latency and run lengths are {scale} x the real ones; figures below "
          "are per (scaled) window, durations unscaled.\n")
    for index, name in enumerate(chosen):
        if index:
            print()
        SCENARIOS[name](scale)


if __name__ == "__main__":
    main()
