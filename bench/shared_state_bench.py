"""What sharing the engine's state through PostgreSQL costs, and what three servers achieve together.

Run: `.venv/bin/python bench/shared_state_bench.py` (PostgreSQL at BENCH_POSTGRES_URL, default
postgresql://postgres@127.0.0.1:5432/postgres; a database `uklaw_bench_<random>` is created there
and dropped at the end). Skipped, saying why, when PostgreSQL does not answer.

1. Reserve/settle cost per generation in PostgreSQL mode: what the router does around one call
   besides the call itself — `health.blocked` (shared cooldowns, read back at most every 0.25 s),
   the completion budget (the other servers' answers read back at most every 1 s), the limiter's
   `reserve`, then `settle` and `observe` (each one transaction locking the model's and the
   provider's rows FOR UPDATE) and the answer's tokens appended to the shared budget samples —
   timed per generation, p50/p95/mean in ms: one thread alone, then 3 "servers" (each its own
   pool) x 4 threads on the same model at once, when the rows queue. Target: < 5 ms per
   generation. Then what an unproven model's half-open probe adds (claim and release, one
   conditional upsert and one delete), paid only until the model first answers.
2. Three real servers (`python -m api_server` processes) on one database and one fake provider
   that allows LIMIT requests per WINDOW seconds (the limiter's minute is shortened to WINDOW by
   `engine.pacing.time_scale`); each server's 4 client threads run single generations for
   DURATION seconds. Printed: samples made against the ceiling (LIMIT per WINDOW over the run),
   the most requests the fake saw in any WINDOW, and its 429s.
"""
from __future__ import annotations

import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx

from config.providers import Limits, PacingConfig
from errors import Category, Failure, Scope
from fallback.budgets import CompletionBudgets
from fallback.health import OWNED, HealthBoard
from fallback.limiter import RateLimiter
from fallback.limiter_state import ScopeState
from providers.headers import read_rate_limits
from simulator.server import FakeProviderServer
from storage.coordination import shared_connect
from storage.postgres import PostgresDatabase
from storage.shared_budgets import SharedBudgetSamples
from storage.shared_health import SharedHealthTable
from storage.shared_limiter import PostgresLimiterStore
from storage.shared_probes import SharedProbes

# what a Groq answer's headers say (plenty left), as the router passes them on every success
READINGS = read_rate_limits({"x-ratelimit-limit-requests": "14400", "x-ratelimit-remaining-requests": "14000",
                             "x-ratelimit-reset-requests": "2m59.56s", "x-ratelimit-limit-tokens": "1000000000",
                             "x-ratelimit-remaining-tokens": "999000000", "x-ratelimit-reset-tokens": "7.66s"}, "groq")
ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
ROOT = Path(__file__).resolve().parent.parent
ROUNDS = 2000
WINDOW, LIMIT, DURATION, LATENCY = 6.0, 30, 30.0, 0.1
SERVERS, THREADS = 3, 4


def say(text: str) -> None:
    print(text, flush=True)


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, ""))


class Server:
    """The engine pieces one server holds, on its own connection pool."""

    def __init__(self, url: str, name: str):
        self.database = PostgresDatabase(url, max_size=THREADS + 2, server=name)
        connect = shared_connect(self.database)
        self.health = HealthBoard()
        self.health.share(SharedHealthTable(connect), probes=SharedProbes(connect, name, seconds=60))
        self.budgets = CompletionBudgets(PacingConfig())
        self.budgets.share(SharedBudgetSamples(connect))
        self.limiter = RateLimiter({("groq", "m"): Limits(rpm=10**9, tpm=10**12)}, time.time, PacingConfig(),
                                   store=PostgresLimiterStore(connect, ScopeState.from_dict))

    def generation(self) -> float:
        """What the router does around one call, in seconds."""
        started = time.perf_counter()
        assert self.health.blocked("groq", "m", "fp") is None
        budget = self.budgets.budget("groq", "m", 256, 4096)
        reservation = self.limiter.reserve("groq", "m", 400 + budget)
        assert not isinstance(reservation, float), reservation
        self.limiter.settle(reservation, 1900, READINGS)   # with the header correction, as the router does
        self.budgets.observe("groq", "m", 1500, False, budget)
        return time.perf_counter() - started

    def probe(self, model: str) -> float:
        """Claim and release an unproven model's half-open probe, in seconds."""
        started = time.perf_counter()
        assert self.health.claim_probe("groq", model) == OWNED
        self.health.end_probe("groq", model)
        return time.perf_counter() - started


def run_together(threads: list[threading.Thread]) -> float:
    """Start every thread, wait for all; the seconds that took."""
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def describe(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p95 = ms[int(0.95 * (len(ms) - 1))]
    return f"p50 {statistics.median(ms):.2f} ms, p95 {p95:.2f} ms, mean {statistics.fmean(ms):.2f} ms ({len(ms)} generations)"


def reserve_settle(url: str) -> None:
    say("1. reserve/settle per generation (PostgreSQL mode; target < 5 ms)")
    servers = [Server(url, f"bench:{n}") for n in range(SERVERS)]
    servers[0].health.cool("groq", "other", 60, Failure(Category.RATE_LIMIT, Scope.MODEL, None, "bench"), True)
    for _ in range(50):
        servers[0].generation()   # warm the pools and the rows
    alone = [servers[0].generation() for _ in range(ROUNDS)]
    say(f"   one thread alone:            {describe(alone)}")
    times: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(SERVERS * THREADS)

    def work(server: Server) -> None:
        barrier.wait()
        mine = [server.generation() for _ in range(ROUNDS // (SERVERS * THREADS) * 2)]
        with lock:
            times.extend(mine)

    elapsed = run_together([threading.Thread(target=work, args=(s,)) for s in servers for _ in range(THREADS)])
    say(f"   {SERVERS} servers x {THREADS} threads, one model: {describe(times)}; "
        f"{len(times) / elapsed:.0f} generations/s through the shared rows")
    probes = [servers[0].probe(f"unproven-{n}") for n in range(ROUNDS // 4)]
    say(f"   half-open probe claim + release (unproven models only): {describe(probes)}")
    for server in servers:
        server.database.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def three_servers(url: str) -> None:
    say(f"2. {SERVERS} servers, one provider allowing {LIMIT} requests per {WINDOW:g} s, "
        f"{THREADS} client threads each, {DURATION:g} s")
    fake = FakeProviderServer(latency=LATENCY, seed=5).start()
    fake.limit("g-large", rpm=LIMIT, window=WINDOW)
    config = (f"engine:\n  pacing: {{time_scale: {WINDOW / 60}}}\n"
              f"providers:\n  groq:\n    models: [{{id: g-large, limits: {{rpm: {LIMIT}}}}}]\n")
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "providers.yaml").write_text(config)
        bases = []
        for n in range(SERVERS):
            port = free_port()
            env = {**os.environ, "PORT": str(port), "DATA_DIR": f"{tmp}/data{n}", "DATABASE_URL": url,
                   "GROQ_API_KEY": "gsk_bench-not-a-key", "GROQ_BASE_URL": fake.url, "CEREBRAS_API_KEY": "",
                   "PROVIDER_CONFIG_FILE": f"{tmp}/providers.yaml", "GENERATE_MAX_WAIT": "30"}
            procs.append(subprocess.Popen([sys.executable, "-m", "api_server"], cwd=ROOT, env=env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            bases.append(f"http://127.0.0.1:{port}")
        try:
            for base in bases:
                deadline = time.monotonic() + 30
                while True:
                    try:
                        if httpx.get(base + "/api/health", timeout=1).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    if time.monotonic() > deadline:
                        raise SystemExit(f"server at {base} did not start")
                    time.sleep(0.1)
            made = [0]
            lock = threading.Lock()
            body = {"practice_area": "Tort Law", "topic": "Nuisance", "difficulty": "basic",
                    "sample_type": "case_analysis", "provider": "groq", "model": "g-large", "save": False}
            stop_at = time.monotonic() + DURATION

            def client(base: str) -> None:
                with httpx.Client(timeout=60) as http:
                    while time.monotonic() < stop_at:
                        if http.post(base + "/api/generate", json=body).status_code == 200:
                            with lock:
                                made[0] += 1

            elapsed = run_together([threading.Thread(target=client, args=(b,)) for b in bases for _ in range(THREADS)])
            sent = sorted(r.at for r in fake.requests if r.model == "g-large")
            most = max((sum(1 for t in sent[i:] if t < s + WINDOW) for i, s in enumerate(sent)), default=0)
            ceiling = LIMIT * elapsed / WINDOW
            say(f"   {made[0]} samples in {elapsed:.1f} s against a ceiling of {ceiling:.0f} "
                f"({100 * made[0] / ceiling:.0f}%); most requests in any {WINDOW:g} s: {most} (limit {LIMIT}); "
                f"429s: {fake.statuses[429]}")
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=30)
            fake.stop()


def main() -> int:
    import psycopg

    try:
        with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=3) as admin:
            name = f"uklaw_bench_{secrets.token_hex(4)}"
            admin.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        say(f"skipped: PostgreSQL does not answer at {ADMIN_URL} ({' '.join(str(exc).split())})")
        return 0
    url = with_database(ADMIN_URL, name)
    try:
        reserve_settle(url)
        three_servers(url)
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    sys.exit(main())
