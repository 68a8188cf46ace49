"""Both storage backends at 100,000 and 1,000,000 rows: filling, one append, the column read the
statistics use, the first statistics after start-up, the stats endpoints, search, size.

The first statistics frame is timed twice: after the first start (PostgreSQL: every row read by
COPY, then saved as the statistics snapshot) and after a restart (the snapshot and the rows changed
since, `storage.postgres.stats_snapshot`; SQLite reads every row both times).

Run: `.venv/bin/python bench/backend_bench.py [rows ...]` (default 100000 1000000). PostgreSQL is
measured when BENCH_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/postgres) answers:
a database `uklaw_bench_<random>` is created there and dropped at the end. BENCH_BACKENDS
(default `sqlite,postgresql`) picks the backends. Figures print as they
are measured (1M rows take minutes per backend). Rows are the simulator's samples (about 1.5 KB
of text each), each question unique. BENCH_FILL=copy fills the first 1,000 rows through the store
and the rest by copying them in SQL (new ids, questions and question keys; every trigger and index
still maintained), which takes 1M rows from an hour to minutes; appends, reads and statistics are
then measured through the store as usual.
"""
from __future__ import annotations

import os
import random
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

from api_server import create_app
from config.settings import Settings
from storage import open_storage
from store_bench import fake_records   # a sibling script: bench/ is on sys.path when run
from storage.store import COLUMNS

ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
STATS_FIELDS = ("id", "topic", "difficulty", "sample_type", "provider", "model", "prompt_tokens",
                "completion_tokens", "quality_score", "quality_flags", "simulated", "duplicate_of")
CHUNK = 5000


def say(text: str) -> None:
    print(text, flush=True)


def chunks(rows: int, rng: random.Random) -> Iterator[list[dict]]:
    """Rows in chunks, generated as they go (1M rows of dicts would not fit comfortably)."""
    templates = fake_records(200, rng)
    for start in range(0, rows, CHUNK):
        yield [{**templates[i % 200], "id": f"bench_{i}", "question": f"{templates[i % 200]['question']} ({i})",
                "prompt_tokens": rng.randint(300, 500), "completion_tokens": rng.randint(600, 1500)}
               for i in range(start, min(rows, start + CHUNK))]


def postgres_database() -> tuple[str, str] | None:
    try:
        import psycopg

        with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=3) as admin:
            name = f"uklaw_bench_{secrets.token_hex(4)}"
            admin.execute(f'CREATE DATABASE "{name}"')
    except Exception as exc:  # noqa: BLE001 - reported, and PostgreSQL is skipped
        say(f"PostgreSQL not measured: {exc}")
        return None
    return name, ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def drop_postgres(name: str) -> None:
    import psycopg

    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def best_ms(work, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        best = min(best, (time.perf_counter() - started) * 1000)
    return best


def copy_fill(store, rows: int) -> None:
    """Rows 1,000.. as copies of the first 1,000 (already stored), in SQL, 100k per transaction."""
    copied = [c for c in COLUMNS if c not in ("id", "question")]
    postgres = not store.dialect.json_blocks
    for start in range(1, rows // 1000, 100):
        end = min(rows // 1000, start + 100)
        if postgres:
            numbers, key = f"generate_series({start}, {end - 1}) AS g(n)", "decode(md5(s.id || '_' || n), 'hex')"
        else:
            numbers = f"(WITH RECURSIVE g(n) AS (SELECT {start} UNION ALL SELECT n + 1 FROM g WHERE n < {end - 1}) SELECT n FROM g)"
            key = "randomblob(16)"
        with store.database.transaction() as db:
            db.execute(f"INSERT INTO samples (id, question, question_key, {', '.join(copied)}) "
                       f"SELECT s.id || '_' || n, s.question || ' [' || n || ']', {key}, {', '.join('s.' + c for c in copied)} "
                       f"FROM samples s CROSS JOIN {numbers} WHERE s.seq <= 1000 ORDER BY n, s.seq")
            if postgres:
                db.execute("INSERT INTO samples_json (seq, body) SELECT s.seq, j.body FROM samples s "
                           "JOIN samples_json j ON j.seq = 1 WHERE s.seq > 1000 ON CONFLICT (seq) DO NOTHING")
        say(f"  copied to {end * 1000:,} rows")
    store.add_many([])   # SQLite: seal the copied rows into compressed blocks, as writes do


def measure(backend: str, rows: int, settings: Settings) -> None:
    say(f"\n== {backend}, {rows:,} rows ==")
    store = open_storage(settings)
    rng = random.Random(rows)
    started = time.perf_counter()
    if os.environ.get("BENCH_FILL") == "copy" and rows > 1000:
        store.add_many(next(chunks(1000, rng)))
        copy_fill(store, rows)
        say(f"  filled {rows:,} rows in {time.perf_counter() - started:.0f} s (1,000 through the store, the rest copied in SQL)")
    for chunk in ([] if os.environ.get("BENCH_FILL") == "copy" and rows > 1000 else chunks(rows, rng)):
        store.add_many(chunk)
        done = int(chunk[-1]["id"].split("_")[1]) + 1
        if done % 100_000 == 0 or done == rows:
            elapsed = time.perf_counter() - started
            say(f"  filled {done:,} rows in {elapsed:.0f} s ({done / elapsed:,.0f} rows/s, chunks of {CHUNK:,})")
    extra = list(chunks(rows + 200, random.Random(0)))[-1][-200:]
    appends = []
    for record in extra:
        begun = time.perf_counter()
        store.add(record)
        appends.append((time.perf_counter() - begun) * 1000)
    say(f"  append one sample: median {statistics.median(appends):.2f} ms, "
        f"p95 {sorted(appends)[int(0.95 * len(appends)) - 1]:.2f} ms (200 appends)")
    say(f"  count(): {best_ms(store.count):.1f} ms; columns() of the {len(STATS_FIELDS)} statistics fields + "
        f"4 text lengths: {best_ms(lambda: store.columns(STATS_FIELDS, lengths={'q': 'question', 'a': 'answer', 'r': 'reasoning', 'c': 'case_citation'}), 1) / 1000:.2f} s")
    say(f"  size: {store.size_bytes() / 1e6:,.0f} MB")
    postgres = not store.dialect.json_blocks
    store.close()

    for start in ("start-up", "a restart"):   # PostgreSQL: every row read (and saved), then the snapshot
        services = create_app(settings).extensions["services"]
        started = time.perf_counter()
        services.stats.frame()
        say(f"  first statistics frame after {start}: {time.perf_counter() - started:.2f} s"
            + (" (statistics snapshot and the rows changed since)" if start != "start-up" and postgres else ""))
        services.close()
    app = create_app(settings)
    services = app.extensions["services"]
    client = app.test_client()
    try:
        services.stats.frame()
        for path in ("/api/stats", "/api/stats/detailed", "/api/stats/tokens"):
            first = best_ms(lambda: client.get(path), 1)
            cached = best_ms(lambda: client.get(path))
            say(f"  GET {path}: first {first:.0f} ms, cached {cached:.1f} ms")
        for term in ("Donoghue", "snail bottle", "zebracorn", "[1932] AC 562"):
            say(f"  search {term!r}: {best_ms(lambda: services.store.search(term, None, 50)):.1f} ms (best of 3, limit 50)")
        say(f"  GET /api/data?limit=100&offset={rows // 2}: "
            f"{best_ms(lambda: client.get(f'/api/data?limit=100&offset={rows // 2}').get_data()):.1f} ms")
    finally:
        services.close()


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [100_000, 1_000_000]
    backends = os.environ.get("BENCH_BACKENDS", "sqlite,postgresql").split(",")
    for rows in sizes:
        if "sqlite" in backends:
            with tempfile.TemporaryDirectory() as tmp:
                measure("sqlite", rows, Settings.from_env({}, data_dir=Path(tmp)))
        made = postgres_database() if "postgresql" in backends else None
        if made is not None:
            name, url = made
            try:
                with tempfile.TemporaryDirectory() as tmp:
                    measure("postgresql", rows, Settings.from_env({"DATABASE_URL": url}, data_dir=Path(tmp)))
            finally:
                drop_postgres(name)


if __name__ == "__main__":
    main()
