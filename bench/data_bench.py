"""Large datasets over HTTP, against a real server process (`python -m api_server`):

- the full `/api/data` array: seconds and bytes on the wire, uncompressed and with each encoding a
  browser may accept (zstd, br, gzip);
- search for a present and an absent term; a page of 50 rows in the middle; one append;
- the first statistics after start-up (`GET /api/stats` as soon as the server answers);
- memory: the server's RSS after importing `rows` lines over HTTP, and after a restart on the
  same data, with the import's rows/s.

Run: `make bench`, or `.venv/bin/python bench/data_bench.py [rows ...] [--reads | --memory] [--no-full]
[--no-recompress] [--row-bytes=8000]` (default 1000 10000 100000, reads then memory). `--no-full`
skips the full array (at 1,000,000 rows of 8 KB: 8 GB); `--no-recompress` reads it without the
background recompression (which the reads otherwise wait for: at 1,000,000 rows it would take
hours), with the blocks as sealed; `--row-bytes` sets the rows' size.

Rows for the reads are the fake providers' samples (`simulator.content`: legal-sounding questions,
answers, reasoning and citations of about 3 KB, each made afresh), each answer padded to about 8 KB
of text, the size users' rows reach, with words drawn at random from the samples' own vocabulary
(about 1,000 words, all equally likely: no phrase repeats, so zstd gains less than on real prose's
common words, and more than on prose's facts that never recur); written straight into the store
before the server starts. Rows for the import are
`import_bench.lines` (about 300 bytes each: 100,000 of them fit one request). Figures are wall
time on this machine, which other work may share: the server's CPU seconds are printed beside.
"""
from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Callable

import brotli
import httpx

from import_bench import lines as import_lines   # sibling scripts: bench/ is on sys.path when run
from config.catalog import DIFFICULTIES, SAMPLE_TYPES, TOPICS
from generation.prompts import SampleSpec, build_messages
from simulator.content import make_sample
from store_bench import fill
from storage import json_blocks
from storage.store import Store, new_sample_id

try:
    from compression import zstd
except ImportError:
    from backports import zstd


def fresh_records(count: int, rng: random.Random) -> list[dict]:
    """`count` samples from the fake providers' generator, each made afresh (names, places, amounts,
    sentence choices), so no row repeats another's text: real answers never do."""
    records = []
    for i in range(count):
        spec = SampleSpec(TOPICS[i % len(TOPICS)], DIFFICULTIES[i % 5], list(SAMPLE_TYPES)[i % 4])
        records.append({**make_sample(build_messages(spec)[1]["content"], rng), "id": new_sample_id("groq"),
                        "topic": spec.topic.label, "difficulty": spec.difficulty, "sample_type": spec.sample_type,
                        "provider": "groq", "model": "llama-3.3-70b-versatile",
                        "prompt_tokens": rng.randint(300, 500), "completion_tokens": rng.randint(600, 1500)})
    return records


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


class Server:
    """`python -m api_server` on a free port over `data_dir`, without provider keys."""

    def __init__(self, data_dir: Path, **settings: str):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
        env.update(DATA_DIR=str(data_dir), PORT=str(self.port), HOST="127.0.0.1", MAX_BODY_BYTES=str(1 << 30), **settings)
        self.started = time.perf_counter()
        self.log = data_dir / "server.log"
        with self.log.open("ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "api_server"], env=env, stdout=log, stderr=log)
        self.base = f"http://127.0.0.1:{self.port}"
        while True:
            try:
                httpx.get(self.base + "/api/health", timeout=1)
                break
            except httpx.TransportError:
                if self.process.poll() is not None:
                    raise RuntimeError("the server did not start")
                time.sleep(0.05)
        self.listening = time.perf_counter() - self.started

    def warm_up(self) -> list[str]:
        """What the server logged about its warm-up steps."""
        return [line.split("warm-up: ", 1)[1] for line in self.log.read_text(errors="replace").splitlines()
                if "warm-up: " in line]

    def wait_for(self, text: str, limit: float) -> str | None:
        """The rest of the first log line holding `text`, once the server has logged it."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            for line in self.log.read_text(errors="replace").splitlines():
                if text in line:
                    return line.split(text, 1)[1]
            time.sleep(0.5)
        return None

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def settled_rss_mb(self, quiet: float = 3.0, limit: float = 300.0) -> float:
        """RSS once the server's CPU time has not moved for `quiet` seconds (its warm-up done)."""
        deadline = time.monotonic() + limit
        last, since = self.cpu_seconds(), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.5)
            now = self.cpu_seconds()
            if now - last > 0.05:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet:
                break
        return self.rss_mb()

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)


class _Frames:
    """zstd over several frames, decoded as a stream (a decompressor ends with its frame)."""

    def __init__(self):
        self.decompressor = zstd.ZstdDecompressor()

    def __call__(self, chunk: bytes) -> bytes:
        out = []
        while chunk:
            out.append(self.decompressor.decompress(chunk))
            if not self.decompressor.eof:
                break
            chunk = self.decompressor.unused_data
            self.decompressor = zstd.ZstdDecompressor()
        return b"".join(out)


def _decoder(encoding: str | None) -> Callable[[bytes], bytes]:
    """A streaming decoder for a Content-Encoding."""
    if encoding == "zstd":
        return _Frames()
    if encoding == "gzip":
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress
    if encoding == "br":
        return brotli.Decompressor().process
    return lambda chunk: chunk


def full_array(base: str, encoding: str | None) -> tuple[float, int, int]:
    """Seconds to receive the whole array, bytes on the wire, and bytes decoded (checked to be one
    JSON array). The body is spooled to a file as it arrives and decoded from it afterwards, in
    pieces: at 1,000,000 rows it is gigabytes."""
    headers = {"Accept-Encoding": encoding or "identity"}
    with tempfile.TemporaryFile() as spool:
        started = time.perf_counter()
        with httpx.stream("GET", base + "/api/data", headers=headers, timeout=3600) as response:
            assert response.status_code == 200
            assert response.headers.get("Content-Encoding", "identity") == (encoding or "identity")
            for raw in response.iter_raw():
                spool.write(raw)
        elapsed = time.perf_counter() - started
        wire = spool.tell()
        spool.seek(0)
        decode, decoded, first, last = _decoder(encoding), 0, b"", b""
        while raw := spool.read(1 << 20):
            if piece := decode(raw):
                first, last, decoded = first or piece[:1], piece[-1:], decoded + len(piece)
    assert first == b"[" and last == b"]"
    return elapsed, wire, decoded


def timed_ms(client: httpx.Client, method: str, path: str, repeat: int = 5, **kwargs) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.request(method, path, **kwargs)
        assert response.status_code == 200, (path, response.status_code, response.text[:200])
        best = min(best, (time.perf_counter() - started) * 1000)
    return best


def reads(rows: int, full: bool, row_bytes: int, recompress: bool = True) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        store = Store(data_dir / "dataset.sqlite3")
        started = time.perf_counter()
        rng = random.Random(rows)
        for start in range(0, rows, 50_000):   # in slices: a million padded rows would not fit in memory
            fill(store, padded(fresh_records(min(50_000, rows - start), rng), rng, row_bytes))
        store.close()
        size_mb = (data_dir / "dataset.sqlite3").stat().st_size / 1e6
        print(f"\n{rows:,} rows of about {row_bytes:,} characters ({size_mb:,.0f} MB database, written in "
              f"{time.perf_counter() - started:.0f} s)", flush=True)
        server = Server(data_dir, **({} if recompress else {"RECOMPRESS_CPU_SHARE": "0"}))
        try:
            with httpx.Client(base_url=server.base, timeout=600) as client:
                cpu = server.cpu_seconds()
                started = time.perf_counter()
                assert client.get("/api/stats").status_code == 200
                print(f"  first GET /api/stats after start-up: {time.perf_counter() - started:.2f} s "
                      f"(server listening after {server.listening:.1f} s; it used {server.cpu_seconds() - cpu:.2f} "
                      f"CPU s meanwhile, warm-up included)")
                print(f"  GET /api/stats again: {timed_ms(client, 'GET', '/api/stats'):.1f} ms")
                rss = server.settled_rss_mb()
                print(f"  warm-up: {'; '.join(server.warm_up())}; server RSS then {rss:,.0f} MB")
                if full:
                    if recompress:
                        recompressed = server.wait_for("recompress: ", limit=3600)
                        print(f"  background recompression: {recompressed or 'not finished within an hour'}; server "
                              f"RSS then {server.rss_mb():,.0f} MB", flush=True)
                    else:
                        print("  background recompression off (RECOMPRESS_CPU_SHARE=0): the blocks as sealed, at "
                              f"level {json_blocks.BLOCK_LEVEL}", flush=True)
                    for encoding in (None, "zstd", "br", "gzip"):
                        cpu = server.cpu_seconds()
                        elapsed, wire, decoded = full_array(server.base, encoding)
                        print(f"  GET /api/data ({encoding or 'uncompressed'}): {elapsed:.2f} s, {wire / 1e6:,.1f} MB on "
                              f"the wire ({decoded / 1e6:,.1f} MB decoded; server CPU {server.cpu_seconds() - cpu:.2f} s)",
                              flush=True)
                page = f"/api/data?limit=50&offset={rows // 2}"
                print(f"  GET {page}: {timed_ms(client, 'GET', page):.1f} ms (best of 5)")
                for term in ("Donoghue", "snail bottle", "zebracorn"):
                    print(f"  GET /api/search?q={term}: {timed_ms(client, 'GET', '/api/search?q=' + term):.1f} ms "
                          "(best of 5)")
                sample = {"question": f"Is a bench append {rows} stored at once?", "answer": "Yes.",
                          "topic": "Tort Law - Nuisance", "difficulty": "basic", "reasoning": "Step 1: x.",
                          "case_citation": "Donoghue v Stevenson [1932] AC 562"}
                appends = []
                for i in range(10):
                    started = time.perf_counter()
                    answer = client.post("/api/add", json={**sample, "question": f"{sample['question']} ({i})"})
                    assert answer.status_code == 200, answer.text
                    appends.append((time.perf_counter() - started) * 1000)
                print(f"  POST /api/add: median {sorted(appends)[5]:.1f} ms (of 10)")
        finally:
            server.stop()


def memory(rows: int) -> None:
    """Import `rows` lines over HTTP into an empty server; RSS after it, then after a restart."""
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        content = "\n".join(import_lines(rows, random.Random(rows), "m"))
        server = Server(data_dir)
        try:
            with httpx.Client(base_url=server.base, timeout=600) as client:
                before = server.settled_rss_mb()
                started = time.perf_counter()
                answer = client.post("/api/import/jsonl?background=true", json={"content": content})
                del content
                assert answer.status_code == 202, answer.text[:300]
                location = answer.headers["Location"]
                while (job := client.get(location).json()["job"])["status"] in ("queued", "running"):
                    time.sleep(0.2)
                assert job["status"] == "completed", job
                seconds = time.perf_counter() - started
                after_import = server.settled_rss_mb()
        finally:
            server.stop()
        server = Server(data_dir)
        try:
            after_restart = server.settled_rss_mb()
        finally:
            server.stop()
        print(f"\nimport of {rows:,} lines over HTTP: {seconds:.1f} s, {rows / seconds:,.0f} rows/s "
              f"(job: {job['rows_per_second']} rows/s); server RSS {before:,.0f} MB before, {after_import:,.0f} MB "
              f"after, {after_restart:,.0f} MB after a restart (x{after_import / after_restart:.2f})", flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    sizes = [int(a) for a in args if not a.startswith("--")] or [1000, 10000, 100000]
    row_bytes = next((int(a.split("=", 1)[1]) for a in args if a.startswith("--row-bytes=")), 8000)
    for n in sizes:
        if "--memory" not in args:
            reads(n, full="--no-full" not in args, row_bytes=row_bytes, recompress="--no-recompress" not in args)
    for n in sizes:
        if "--reads" not in args:
            memory(n)
