"""Large datasets over HTTP: the full `/api/data` array (time and bytes on the wire, with and without
compression), search for a present and an absent term, and the first statistics after start-up.

Run: `make bench`, or `.venv/bin/python bench/data_bench.py [rows ...]` (default 1000 10000 100000).

Rows are realistic samples padded to about 8 KB of text each, the size users' rows reach. The
server is the real app on waitress in this process, the client httpx over loopback, reading the
whole body; "wire" is the bytes received before decoding (httpx decodes zstd only with the `zstandard`
package, so for zstd "decoded" may show the wire size).
"""
from __future__ import annotations

import random
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from waitress import create_server

from api_server import create_app
from store_bench import fake_records, fill   # a sibling script: bench/ is on sys.path when run
from config.settings import Settings
from storage.store import Store

def padded(records: list[dict], rng: random.Random, size: int = 8000) -> list[dict]:
    """Each answer grown to about `size` characters of text with words drawn from the samples'
    own vocabulary, so the rows compress about as well as real prose, not like repeated text."""
    vocabulary = sorted({w for r in records[:200] for k in ("question", "answer", "reasoning")
                         for w in str(r.get(k) or "").split()})
    for record in records:
        text = sum(len(str(record.get(k) or "")) for k in ("question", "answer", "reasoning", "case_citation"))
        words = rng.choices(vocabulary, k=max(0, size - text) // 7)
        record["answer"] = record["answer"] + " " + " ".join(words)
    return records


def serve(settings: Settings):
    app = create_app(settings)
    server = create_server(app, host="127.0.0.1", port=0, threads=4)
    def run() -> None:
        try:
            server.run()
        except OSError:
            pass   # the listening socket closed at the end of the run

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return app, server, f"http://127.0.0.1:{server.effective_port}"


def full_array(base: str, encoding: str | None) -> tuple[float, int, int]:
    """Seconds, bytes on the wire and decoded bytes of the whole array."""
    headers = {"Accept-Encoding": encoding or "identity"}
    started = time.perf_counter()
    wire = decoded = 0
    with httpx.stream("GET", base + "/api/data", headers=headers, timeout=600) as response:
        assert response.status_code == 200
        for raw in response.iter_raw():
            wire += len(raw)
        # decode separately so the timing includes what a browser does (it decodes as it reads)
    elapsed = time.perf_counter() - started
    if encoding:
        with httpx.stream("GET", base + "/api/data", headers=headers, timeout=600) as response:
            decoded = sum(len(chunk) for chunk in response.iter_bytes())
    else:
        decoded = wire
    return elapsed, wire, decoded


def timed_ms(client: httpx.Client, path: str, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        assert client.get(path).status_code == 200
        best = min(best, (time.perf_counter() - started) * 1000)
    return best


def run(rows: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings.from_env({}, data_dir=Path(tmp))
        store = Store(settings.database_path)
        started = time.perf_counter()
        rng = random.Random(rows)
        fill(store, padded(fake_records(rows, rng), rng))
        store.close()
        size_mb = settings.database_path.stat().st_size / 1e6
        print(f"\n{rows:,} rows ({size_mb:,.0f} MB database, filled in {time.perf_counter() - started:.1f} s)")

        app, server, base = serve(settings)
        try:
            started = time.perf_counter()
            app.extensions["services"].stats.frame()
            print(f"  first statistics frame after start-up: {time.perf_counter() - started:.2f} s")
            for encoding in (None, "gzip", "br", "zstd"):
                elapsed, wire, decoded = full_array(base, encoding)
                print(f"  GET /api/data ({encoding or 'uncompressed'}): {elapsed:.2f} s, {wire / 1e6:,.1f} MB on the"
                      f" wire ({decoded / 1e6:,.1f} MB decoded)")
            with httpx.Client(base_url=base, timeout=60) as client:
                for term in ("Donoghue", "snail bottle", "zebracorn"):
                    print(f"  GET /api/search?q={term}: {timed_ms(client, '/api/search?q=' + term):.1f} ms (best of 5)")
        finally:
            server.close()
            app.extensions["services"].close()


if __name__ == "__main__":
    for n in [int(a) for a in sys.argv[1:]] or [1000, 10000, 100000]:
        run(n)
