"""Large imports run as background jobs: 202 and a job to follow, progress, cancellation between
chunks, and a prompt stop when the server shuts down. Small ones keep the synchronous answer."""
from __future__ import annotations

import json
import signal
import threading
import time

import httpx
import pytest

import quality.duplicates
from dataset.importing import Importer
from tests.conftest import wait_for
from tests.test_process import ServerProcess

TOPICS = ["Tort Law - Nuisance", "Contract Law - Breach of Contract", "Property Law - Mortgages",
          "Employment Law - Redundancy", "Company Law - Directors Duties"]
PLACES = ["Leeds", "Bristol", "Cardiff", "Norwich", "York", "Exeter", "Bath", "Durham"]


def sample(n: int, **fields) -> dict:
    return {"id": f"imp_{n}", "topic": TOPICS[n % len(TOPICS)], "difficulty": "basic",
            "question": f"Question {n}: may a tenant in {PLACES[n % len(PLACES)]} withhold rent number {n * 7919}?",
            "answer": "Only in narrow circumstances.", "case_citation": "Lee-Parker v Izzet [1971] 1 WLR 1688",
            "reasoning": "Step 1: set-off. Step 2: repairs.", **fields}


def content(count: int, start: int = 0) -> str:
    return "\n".join(json.dumps(sample(n)) for n in range(start, start + count))


def follow(client, location: str, timeout: float = 60) -> dict:
    """The job's report once it has finished."""
    return wait_for(lambda: (job := client.get(location).get_json()["job"])["status"] not in ("queued", "running")
                    and job, timeout=timeout)


def size(client) -> int:
    return int(client.get("/api/data").headers["X-Total-Count"])


@pytest.fixture
def small_jobs(make_app):
    """An app whose imports of more than 50 lines run as jobs, 20 rows a chunk."""
    return make_app(import_background_lines=50, import_chunk_rows=20)


@pytest.fixture
def gate(monkeypatch):
    """Holds a background import after each chunk it stores until the test lets it go on."""

    class Gate:
        def __init__(self):
            self.stored = threading.Semaphore(0)
            self.go = threading.Event()

    held = Gate()
    original = Importer.store_chunk

    def store_then_wait(self, lines):
        original(self, lines)
        if threading.current_thread().name == "import-jobs":
            held.stored.release()
            held.go.wait(30)

    monkeypatch.setattr(Importer, "store_chunk", store_then_wait)
    yield held
    held.go.set()


def test_up_to_the_threshold_the_answer_is_synchronous(small_jobs):
    client = small_jobs.test_client()
    response = client.post("/api/import/jsonl", json={"content": content(50)})
    assert response.status_code == 200
    body = response.get_json()
    assert body["success"] and body["imported"] == 50 and body["total_samples"] == 50 and body["message"]
    assert "job" not in body and size(client) == 50


def test_a_larger_import_answers_202_with_a_job_to_follow(small_jobs):
    client = small_jobs.test_client()
    lines = [json.dumps(sample(n)) for n in range(120)]
    lines.insert(30, json.dumps(sample(7)))                                     # a repeated id
    lines.insert(60, json.dumps(sample(500, question=sample(3)["question"])))   # a repeated question
    lines.insert(90, "")
    response = client.post("/api/import/jsonl", json={"content": "\n".join(lines)})
    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    assert body["success"] is True and body["message"] and body["total_samples"] == 0
    job_id = body["job_id"]
    assert response.headers["Location"] == f"/api/import/jobs/{job_id}" and body["job"]["id"] == job_id
    assert body["job"]["status"] in ("queued", "running", "completed")

    job = follow(client, response.headers["Location"])
    assert job["status"] == "completed" and job["phase"] == "done"
    assert job["lines_total"] == 123 and job["lines_done"] == 123 and job["records_total"] == 122
    assert job["imported"] == 120 and job["duplicates"] == 1 and job["duplicate_ids"] == ["imp_7"]
    assert job["rejected"] == 1 and job["duplicate_questions"] == 1
    [rejection] = job["rejections"]
    assert rejection["line"] == 61 and rejection["id"] == "imp_500" and "imp_3" in rejection["reason"]
    assert job["errors"] == [] and job["finished_at"] and job["rows_per_second"] > 0
    assert size(client) == 120 and client.get("/api/stats").get_json()["total"] == 120
    assert client.get("/api/import/jobs").get_json()["jobs"][0]["id"] == job_id


def test_background_true_makes_a_job_of_any_import(client):
    response = client.post("/api/import/jsonl?background=true", json={"content": content(3)})
    assert response.status_code == 202
    assert follow(client, response.headers["Location"])["imported"] == 3


def test_a_bad_line_fails_the_job_before_anything_is_stored(small_jobs):
    client = small_jobs.test_client()
    lines = [json.dumps(sample(n)) for n in range(100)]
    lines[41] = json.dumps(sample(41, prompt_tokens="abc"))
    lines[87] = "{not json"
    response = client.post("/api/import/jsonl", json={"content": "\n".join(lines)})
    job = follow(client, response.headers["Location"])
    assert job["status"] == "failed" and job["imported"] == 0 and job["error_count"] == 2
    assert [e["line"] for e in job["errors"]] == [42, 88]
    assert "prompt_tokens" in job["errors"][0]["error"] and "line 42" in job["errors"][0]["error"]
    assert "nothing was imported" in job["message"] and size(client) == 0


def test_skip_invalid_imports_the_rest_and_lists_what_it_skipped(small_jobs):
    client = small_jobs.test_client()
    lines = [json.dumps(sample(n)) for n in range(100)]
    lines[9] = json.dumps(sample(9, latency=-1))
    job = follow(client, client.post("/api/import/jsonl?skip_invalid=true",
                                     json={"content": "\n".join(lines)}).headers["Location"])
    assert job["status"] == "completed" and job["imported"] == 99 and job["rejected"] == 1
    assert job["rejections"] == [{"line": 10, "id": "imp_9", "reason": job["rejections"][0]["reason"]}]
    assert "latency" in job["rejections"][0]["reason"] and size(client) == 99
    sync = client.post("/api/import/jsonl?skip_invalid=true",
                       json={"content": json.dumps(sample(200)) + "\n" + json.dumps(sample(201, attempts="x"))})
    assert sync.status_code == 200
    body = sync.get_json()
    assert body["imported"] == 1 and body["rejected"][0]["line"] == 2 and "attempts" in body["rejected"][0]["reason"]


def test_a_cancelled_job_stops_between_chunks_and_keeps_what_it_stored(small_jobs, gate):
    client = small_jobs.test_client()
    location = client.post("/api/import/jsonl", json={"content": content(200)}).headers["Location"]
    assert gate.stored.acquire(timeout=30)          # the first chunk is stored; the job waits
    running = client.get(location).get_json()["job"]
    assert running["status"] == "running" and running["phase"] == "importing" and running["imported"] == 20
    assert running["lines_checked"] == running["lines_total"] == 200
    cancelled = client.delete(location)
    assert cancelled.status_code == 200 and cancelled.get_json()["job"]["cancel_requested"] is True
    gate.go.set()
    job = follow(client, location)
    assert job["status"] == "cancelled" and job["imported"] == 20 and job["lines_done"] == 20
    assert "20 sample(s) imported before it stopped are kept" in job["message"]
    assert size(client) == 20
    again = client.delete(location)
    assert again.status_code == 409 and "cancelled" in again.get_json()["error"]


def test_a_queued_job_can_be_cancelled_before_it_starts(small_jobs, gate):
    client = small_jobs.test_client()
    first = client.post("/api/import/jsonl", json={"content": content(100)}).headers["Location"]
    assert gate.stored.acquire(timeout=30)
    second = client.post("/api/import/jsonl", json={"content": content(100, start=1000)}).headers["Location"]
    assert client.get(second).get_json()["job"]["status"] == "queued"
    assert client.delete(second).get_json()["job"]["status"] == "cancelled"
    gate.go.set()
    assert follow(client, first)["status"] == "completed"
    assert follow(client, second)["imported"] == 0 and size(client) == 100


def test_unknown_jobs(client):
    assert client.get("/api/import/jobs/import_1_deadbeef").status_code == 404
    assert client.delete("/api/import/jobs/import_1_deadbeef").status_code == 404


def test_closing_the_services_stops_a_running_import_within_a_chunk(small_jobs, gate):
    client = small_jobs.test_client()
    services = small_jobs.extensions["services"]
    location = client.post("/api/import/jsonl", json={"content": content(200)}).headers["Location"]
    assert gate.stored.acquire(timeout=30)
    threading.Timer(0.2, gate.go.set).start()     # the chunk in hand finishes while close() waits
    started = time.monotonic()
    services.imports.stop(timeout=10)
    assert time.monotonic() - started < 5
    job = services.imports.get(location.rsplit("/", 1)[1])
    assert job["status"] == "cancelled" and "shutting down" in job["message"] and job["imported"] == 20
    assert services.store.count() == 20
    refused = client.post("/api/import/jsonl", json={"content": content(100, start=500)})
    assert refused.status_code == 503


def test_each_question_is_fingerprinted_and_assessed_once(make_app, monkeypatch):
    """The import's cost per row: one fingerprint of the question (shared by the duplicate check,
    the reservation and the store event) and one quality assessment."""
    calls = {"fingerprint": 0, "assess": 0}
    probe = quality.duplicates.DuplicateIndex._probe
    import quality.service as service
    assess = service.assess

    def counted_probe(self, question):
        calls["fingerprint"] += 1
        return probe(self, question)

    def counted_assess(*args, **kwargs):
        calls["assess"] += 1
        return assess(*args, **kwargs)

    client = make_app(import_background_lines=100, import_chunk_rows=25).test_client()
    monkeypatch.setattr(quality.duplicates.DuplicateIndex, "_probe", counted_probe)
    monkeypatch.setattr(service, "assess", counted_assess)
    assert client.post("/api/import/jsonl", json={"content": content(100)}).get_json()["imported"] == 100
    assert calls == {"fingerprint": 100, "assess": 100}
    job = follow(client, client.post("/api/import/jsonl", json={"content": content(150, start=100)}).headers["Location"])
    assert job["imported"] == 150
    assert calls == {"fingerprint": 250, "assess": 250}


def test_the_openapi_document_describes_the_jobs(client):
    paths = client.get("/api/openapi.json").get_json()["paths"]
    post = paths["/api/import/jsonl"]["post"]
    assert {"200", "202", "400"} <= set(post["responses"]) and "Location" in post["responses"]["202"]["headers"]
    assert {p["name"] for p in post["parameters"]} >= {"background", "skip_invalid"}
    assert {"get", "delete"} <= set(paths["/api/import/jobs/{job_id}"]) and "get" in paths["/api/import/jobs"]


def test_sigterm_stops_a_large_import_within_seconds(tmp_path, fake):
    server = ServerProcess(tmp_path, fake, IMPORT_CHUNK_ROWS="200", IMPORT_BACKGROUND_LINES="1000").start()
    try:
        total = 40_000
        response = httpx.post(server.base + "/api/import/jsonl", json={"content": content(total)}, timeout=60)
        assert response.status_code == 202
        location = server.base + response.headers["Location"]
        wait_for(lambda: httpx.get(location, timeout=10).json()["job"]["lines_done"] >= 400, timeout=60)
        started = time.monotonic()
        server.kill(signal.SIGTERM)
        assert time.monotonic() - started < 10 and server.proc.returncode == 0
        log = server.log.read_text()
        assert "stopped: the server is shutting down" in log
    finally:
        server.stop()
    restarted = ServerProcess(tmp_path, fake).start()
    try:
        stored = restarted.get("/api/stats")["total"]
        assert 0 < stored < total and stored % 200 == 0    # whole chunks only
    finally:
        restarted.stop()


def test_freed_memory_is_handed_back_to_the_system():
    """After a large import the worker calls `memory.release()`: with glibc it asks the allocator to
    return free pages (malloc_trim), so the server's RSS falls back instead of staying at its peak."""
    import platform

    from dataset import memory

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("malloc_trim is glibc's")
    assert memory.release() is True
