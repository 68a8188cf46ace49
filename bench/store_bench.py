"""Append cost at 1,000 vs 100,000 rows, and statistics latency at 100,000 samples.

Run: `make bench`, or `.venv/bin/python bench/store_bench.py [rows]`.

The store is filled with realistic samples (about 3 KB of text each). Appends are single
`POST /api/add`-sized writes, one transaction each. Statistics are timed through the real
endpoints (Flask test client): right after a write (the frame is updated and the figures
recomputed) and again with nothing changed (served from the cache).
"""
from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
from pathlib import Path


from api_server import create_app
from config.catalog import DIFFICULTIES, SAMPLE_TYPES, TOPICS
from generation.prompts import SampleSpec, build_messages
from config.settings import Settings
from simulator.content import make_sample
from storage.store import Store, new_sample_id


def fake_records(count: int, rng: random.Random) -> list[dict]:
    records = []
    templates = []
    for i in range(200):
        spec = SampleSpec(TOPICS[i % len(TOPICS)], DIFFICULTIES[i % 5], list(SAMPLE_TYPES)[i % 4])
        templates.append((spec, make_sample(build_messages(spec)[1]["content"], rng)))
    for i in range(count):
        spec, sample = templates[i % len(templates)]
        records.append({**sample, "id": new_sample_id("groq"), "question": f"{sample['question']} ({i})",
                        "topic": spec.topic.label, "difficulty": spec.difficulty, "sample_type": spec.sample_type,
                        "provider": "groq", "model": "llama-3.3-70b-versatile",
                        "prompt_tokens": rng.randint(300, 500), "completion_tokens": rng.randint(600, 1500)})
    return records


def fill(store: Store, records: list[dict]) -> None:
    for start in range(0, len(records), 5000):
        store.add_many(records[start:start + 5000])


def append_cost(store: Store, records: list[dict]) -> tuple[float, float, float]:
    """Median, mean and p95 milliseconds of single-sample appends (one transaction each)."""
    times = []
    for record in records:
        started = time.perf_counter()
        store.add(record)
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return statistics.median(times), statistics.mean(times), times[int(0.95 * len(times)) - 1]


def timed(client, path: str) -> float:
    started = time.perf_counter()
    response = client.get(path)
    elapsed = (time.perf_counter() - started) * 1000
    assert response.status_code == 200
    return elapsed


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    rng = random.Random(1)
    records = fake_records(rows + 4000, rng)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings.from_env({}, data_dir=Path(tmp))
        store = Store(settings.database_path)
        fill(store, records[:1000])
        small = append_cost(store, records[rows:rows + 2000])
        fill(store, records[1000:rows])
        large = append_cost(store, records[rows + 2000:rows + 4000])
        size = store.count()
        store.close()
        for label, (median, mean, p95) in (("~1,000", small), (f"{size - 2000:,}", large)):
            print(f"append one sample at {label} rows (2,000 appends): median {median:.3f} ms, "
                  f"mean {mean:.3f} ms, p95 {p95:.3f} ms")

        app = create_app(settings)
        services = app.extensions["services"]
        services.start(resume_batches=False)
        client = app.test_client()
        started = time.perf_counter()
        services.stats.frame()
        print(f"statistics frame ready {(time.perf_counter() - started) * 1000:.0f} ms after start-up "
              f"({services.store.count():,} samples; built in the background)")
        services.quality.wait_ready()
        print(f"duplicate index ready {time.perf_counter() - started:.1f} s after start-up (background)")
        for path in ("/api/stats", "/api/stats/detailed", "/api/stats/tokens"):
            after_write = []
            cached = []
            extra = fake_records(20, random.Random(len(path)))   # fresh questions for the writes
            for i in range(20):
                added = client.post("/api/add", json={k: extra[i][k] for k in (
                    "question", "answer", "reasoning", "case_citation", "topic", "difficulty")})
                assert added.status_code == 200, added.get_json()
                after_write.append(timed(client, path))
                cached.append(timed(client, path))
            print(f"GET {path:<20} at {services.store.count():,} samples: after a write median "
                  f"{statistics.median(after_write):.1f} ms (max {max(after_write):.1f}), cached median "
                  f"{statistics.median(cached):.2f} ms")
        services.store.close()


if __name__ == "__main__":
    main()
