"""Import throughput: rows per second at 1,000, 10,000 and 100,000 lines, and whether it stays
flat as the dataset grows.

Run: `.venv/bin/python bench/import_bench.py` (a few minutes), or with sizes:
`.venv/bin/python bench/import_bench.py 1000 10000`. `--sync` sends every import as one
synchronous request (what older versions did; for comparison). `--grow=400000` instead fills one
store in jobs of `--step=50000` lines and prints each job's rate: how the cost of a row changes as
the store grows past the sizes above (about ten minutes at 400,000).

Each size is imported through the real endpoint (Flask test client) into a fresh, empty store;
1,000 lines in the request, larger imports as a background job polled until it completes. The
time runs from the POST to the job's completion: reading the body, checking every line, the
quality gate, the duplicate index and the writes. Then, to see the cost per row does not grow
with the dataset, 10,000 more lines are imported into the store the largest run filled, and the
rate of the largest job's first and last tenth is printed (from its progress reports).

The lines are like the ones people import: about 300 bytes each, questions built from a few
templates with varying names, places, businesses, sums and topics (so many share much of their
wording, as generated datasets do), a real authority, all seven required fields.
"""
from __future__ import annotations

import json
import random
import sys
import tempfile
import time
from pathlib import Path

from api_server import create_app
from config.catalog import DIFFICULTIES, SAMPLE_TYPES, TOPICS
from config.settings import Settings
from simulator.content import BUSINESSES, FIRST, LAST, PLACES, SETTINGS, authorities

TEMPLATES = [
    "{c}, who runs {b} in {p}, fell out with {o} {s}; about £{n:,} is at stake. How does {t} apply?",
    "Can {c} recover £{n:,} from {o} after a dispute over {b} in {p}, and what does {t} say?",
    "{o} says {c} owes £{n:,} for work on {b} near {p} {s}. Which rules of {t} decide it?",
    "What should {c} in {p} do when {o} refuses to pay £{n:,} owed to {b}, given {t}?",
]


def lines(count: int, rng: random.Random, prefix: str) -> list[str]:
    pool = [a for group in authorities().values() for a in group]
    kinds = list(SAMPLE_TYPES)
    out = []
    for i in range(count):
        topic = rng.choice(TOPICS)
        client, other = f"{rng.choice(FIRST)} {rng.choice(LAST)}", f"{rng.choice(FIRST)} {rng.choice(LAST)}"
        question = rng.choice(TEMPLATES).format(c=client, o=other, b=rng.choice(BUSINESSES), p=rng.choice(PLACES),
                                                s=rng.choice(SETTINGS), n=rng.randrange(2, 40_000) * 25,
                                                t=topic.topic.lower())
        cite = rng.choice(pool)
        out.append(json.dumps({
            "id": f"{prefix}_{i}", "question": question, "answer": f"Applying {cite}, {client.split()[0]} likely succeeds.",
            "topic": topic.label, "difficulty": rng.choice(DIFFICULTIES), "case_citation": cite,
            "reasoning": f"Step 1: the rule in {cite}. Step 2: apply it.", "sample_type": rng.choice(kinds)}))
    return out


def run_import(client, content: str, *, background: bool) -> tuple[float, dict, list[tuple[float, int]]]:
    """(seconds, final answer or job report, progress samples (seconds, lines done))."""
    started = time.perf_counter()
    response = client.post("/api/import/jsonl" + ("?background=true" if background else ""), json={"content": content})
    if response.status_code == 200:
        return time.perf_counter() - started, response.get_json(), []
    assert response.status_code == 202, (response.status_code, response.get_data(as_text=True)[:300])
    location = response.headers["Location"]
    progress = []
    while True:
        job = client.get(location).get_json()["job"]
        progress.append((time.perf_counter() - started, job["lines_done"]))
        if job["status"] not in ("queued", "running"):
            assert job["status"] == "completed", job
            return time.perf_counter() - started, job, progress
        time.sleep(0.1)


def tenth_rates(progress: list[tuple[float, int]], total: int) -> tuple[float, float] | None:
    """Rows per second over the first and the last tenth of the importing phase."""
    moving = [(t, n) for t, n in progress if n > 0]
    if len(moving) < 4:
        return None

    def at(fraction: float) -> tuple[float, int]:
        return min(moving, key=lambda point: abs(point[1] - fraction * total))

    (t0, n0), (t1, n1) = moving[0], at(0.1 + moving[0][1] / total)
    (t8, n8), (t9, n9) = at(0.9), moving[-1]
    if t1 <= t0 or t9 <= t8:
        return None
    return (n1 - n0) / (t1 - t0), (n9 - n8) / (t9 - t8)


def grow(total: int, step: int) -> None:
    """One store filled in jobs of `step` lines: each job's rows/s against the store's size before it."""
    rng = random.Random(7)
    print(f"{'store before':>12} {'lines':>7} {'seconds':>8} {'rows/s':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(Settings.from_env({}, data_dir=Path(tmp), max_body_bytes=1 << 30))
        services = app.extensions["services"]
        services.start(resume_batches=False)
        services.quality.wait_ready()
        client = app.test_client()
        for before in range(0, total, step):
            seconds, _, _ = run_import(client, "\n".join(lines(step, rng, f"g{before}")), background=True)
            print(f"{before:>12,} {step:>7,} {seconds:>8.2f} {step / seconds:>7,.0f}", flush=True)
        services.close()


def option(argv: list[str], name: str) -> int | None:
    """The value of `--name=N`, if given."""
    return next((int(a.split("=", 1)[1]) for a in argv if a.startswith(f"--{name}=")), None)


def main(argv: list[str]) -> None:
    total = option(argv, "grow")
    if total:
        grow(total, option(argv, "step") or 50_000)
        return
    sync = "--sync" in argv
    sizes = [int(a) for a in argv if not a.startswith("--")] or [1_000, 10_000, 100_000]
    rng = random.Random(7)
    print(f"{'lines':>9} {'mode':>10} {'seconds':>9} {'rows/s':>9}  outcome")
    largest = None
    for size in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            app = create_app(Settings.from_env({}, data_dir=Path(tmp), max_body_bytes=1 << 30))
            services = app.extensions["services"]
            services.start(resume_batches=False)
            services.quality.wait_ready()
            client = app.test_client()
            content = "\n".join(lines(size, rng, f"s{size}"))
            background = not sync and size > services.settings.import_background_lines
            seconds, answer, progress = run_import(client, content, background=background)
            mode = "job" if background else "request"
            print(f"{size:>9,} {mode:>10} {seconds:>9.2f} {size / seconds:>9,.0f}  {answer['message']}", flush=True)
            rates = tenth_rates(progress, size)
            if rates:
                print(f"{'':>9} {'':>10} first tenth {rates[0]:,.0f} rows/s, last tenth {rates[1]:,.0f} rows/s")
            if size == max(sizes) and size >= 10_000:
                extra = "\n".join(lines(10_000, rng, "more"))
                seconds, answer, _ = run_import(client, extra, background=not sync)
                total = services.store.count()
                largest = (total, seconds)
            services.close()
    if largest:
        total, seconds = largest
        print(f"{10_000:>9,} {'job' if not sync else 'request':>10} {seconds:>9.2f} {10_000 / seconds:>9,.0f}  "
              f"into a store already holding {total - 10_000:,} samples")


if __name__ == "__main__":
    main(sys.argv[1:])
