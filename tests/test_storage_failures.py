"""When the database cannot be written: a full disk is visible (health, batch state, HTTP answers),
a batch pauses instead of burning provider calls, and everything carries on when writes work again.

The full disk is SQLite's own: `Database.limit_pages(1)` sets `max_page_count` on every connection,
so any write that needs a new page fails with "database or disk is full" exactly as on a full disk.
"""
from __future__ import annotations

import errno
import json
import os
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from storage import schema
from tests.conftest import wait_for

pytestmark = pytest.mark.sqlite_only   # the SQLite file itself; PostgreSQL's own tests: test_postgres.py

BATCH = {"batch": {"max_in_flight": 3, "max_wait_seconds": 2, "heartbeat_seconds": 0.2,
                   "storage_retry_seconds": 0.1}}
BIG = "A long answer that needs pages of its own. " * 400   # ~17 KB: never fits in a page's free space


def sample(sample_id: str, question: str, **fields) -> dict:
    return {"id": sample_id, "question": question, "answer": BIG, "topic": "Tort Law - Nuisance",
            "difficulty": "basic", "case_citation": "Donoghue v Stevenson [1932] AC 562",
            "reasoning": "Step 1: duty. Step 2: breach.", **fields}


def disk_full(app, full: bool = True) -> None:
    app.extensions["services"].store.database.limit_pages(1 if full else None)


def status(client, batch_id):
    return client.get(f"/api/generate/batch/status?batch_id={batch_id}").get_json()


# -- health -----------------------------------------------------------------------------------

def test_health_reports_a_full_disk_and_recovers(make_app):
    app = make_app()
    client = app.test_client()
    assert client.get("/api/health").get_json()["status"] == "ok"
    disk_full(app)
    health = client.get("/api/health").get_json()
    assert health["status"] == "degraded" and health["ready"] is False
    assert health["store"]["writable"] is False
    assert "database or disk is full" in health["store"]["error"] and "free space" in health["store"]["error"]
    assert any(p.startswith("storage: ") and "dataset.sqlite3" in p for p in health["problems"])
    disk_full(app, False)
    health = client.get("/api/health").get_json()
    assert health["status"] == "ok" and health["store"] == {"writable": True, "path": "dataset.sqlite3", "backend": "sqlite",
                                                             "schema_version": schema.LATEST}
    assert "problems" not in health


def test_health_stays_degraded_after_a_real_write_failed_though_its_small_check_fits(make_app, monkeypatch):
    """A nearly full disk can take the health check's one-page write in a free page and still
    refuse a sample's: the failed real write is reported until one succeeds (or it is old)."""
    from storage import database as sqlite_database

    app = make_app()
    client = app.test_client()
    services = app.extensions["services"]
    wait_for(lambda: not services.warm_up.is_alive())   # its writes would count as a real write that worked
    store = services.store
    store.add(sample("room", "Free pages for the check?"))
    store.delete("room")                       # its pages go to the free list: room for the check only
    disk_full(app)
    assert client.get("/api/health").get_json()["status"] == "ok"   # the check alone fits
    response = client.post("/api/add", json=sample("s1", "Is a sample refused?"))
    assert response.status_code == 503
    health = client.get("/api/health").get_json()
    assert health["status"] == "degraded" and "database or disk is full" in health["store"]["error"]
    monkeypatch.setattr(sqlite_database, "FAILURE_MEMORY_SECONDS", 0.0)   # an old failure is forgotten
    assert client.get("/api/health").get_json()["status"] == "ok"
    monkeypatch.undo()
    client.post("/api/add", json=sample("s2", "Refused again?"))
    assert client.get("/api/health").get_json()["status"] == "degraded"
    disk_full(app, False)
    assert client.post("/api/add", json=sample("s3", "Room again?")).status_code == 200
    assert client.get("/api/health").get_json()["status"] == "ok"   # a real write worked since


def test_health_answers_at_once_while_another_writer_holds_the_lock(make_app, tmp_path):
    app = make_app()
    client = app.test_client()
    holder = sqlite3.connect(tmp_path / "data" / "dataset.sqlite3", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")    # another process in the middle of a long write
    try:
        started = time.monotonic()
        health = client.get("/api/health").get_json()
        assert time.monotonic() - started < 5          # not the 30 s a write waits for the lock
        assert health["status"] == "degraded" and "locked" in health["store"]["error"]
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert client.get("/api/health").get_json()["status"] == "ok"


# -- requests that write ----------------------------------------------------------------------

def test_a_failed_add_says_why_and_leaves_its_question_free(make_app):
    app = make_app()
    client = app.test_client()
    body = sample("", "May a landlord keep a deposit for fair wear and tear?")
    del body["id"]                                       # the server names each new sample
    disk_full(app)
    response = client.post("/api/add", json=body)
    assert response.status_code == 503
    assert "database or disk is full" in response.get_json()["error"] and "free space" in response.get_json()["error"]
    disk_full(app, False)
    response = client.post("/api/add", json=body)       # not "duplicates sample 'manual_...'" (never stored)
    assert response.status_code == 200, response.get_json()
    stored = client.get(f"/api/sample/{response.get_json()['id']}").get_json()["sample"]
    assert stored["question"] == body["question"] and client.get("/api/stats").get_json()["total"] == 1


def test_a_failed_import_leaves_its_questions_free(make_app):
    app = make_app()
    client = app.test_client()
    lines = "\n".join(json.dumps(sample(f"i{n}", f"Import question number {n} about private nuisance?"))
                      for n in range(3))
    disk_full(app)
    response = client.post("/api/import/jsonl", json={"content": lines})
    assert response.status_code == 503 and "database or disk is full" in response.get_json()["error"]
    disk_full(app, False)
    lines = lines.replace('"id": "i', '"id": "again')   # the same questions under other ids
    result = client.post("/api/import/jsonl", json={"content": lines}).get_json()
    assert result["imported"] == 3 and result["duplicate_questions"] == [], result
    assert client.get("/api/stats").get_json()["total"] == 3


def test_a_failed_edit_leaves_the_stored_question_in_the_duplicate_index(make_app):
    app = make_app()
    client = app.test_client()
    original = sample("e1", "Is a right to light an easement that can be lost by abandonment?", answer="Short.")
    assert client.post("/api/add", json=original).status_code == 200
    new_question = "Can a tenant withhold rent while the landlord fails to repair the roof?"
    disk_full(app)
    response = client.put("/api/sample/e1", json={"question": new_question, "answer": BIG})
    assert response.status_code == 503
    disk_full(app, False)
    assert client.get("/api/sample/e1").get_json()["sample"]["question"] == original["question"]
    # The edit did not happen: the new question is free, the stored one is still taken.
    assert client.post("/api/add", json=sample("e2", new_question)).status_code == 200
    taken = client.post("/api/add", json=sample("e3", original["question"]))
    assert taken.status_code == 409 and taken.get_json()["duplicate_of"] == "e1"


# -- a batch ----------------------------------------------------------------------------------

def test_a_batch_pauses_while_writes_fail_and_resumes_by_itself(make_app, fake, monkeypatch):
    generated: list[str] = []
    respond = fake.respond

    def recording(path, payload):   # the questions the fake providers hand out
        reply, extra, body = respond(path, payload)
        if body is not None:
            generated.append(json.loads(body["choices"][0]["message"]["content"])["question"])
        return reply, extra, body

    monkeypatch.setattr(fake, "respond", recording)
    fake.latency = 0.02
    app = make_app(BATCH)
    client = app.test_client()
    seen_in_flight: list[int] = []

    def state():
        current = status(client, batch_id)
        seen_in_flight.append(current["in_flight"])
        return current

    batch_id = client.post("/api/generate/batch/start", json={"target_count": 30}).get_json()["batch_id"]
    wait_for(lambda: state()["samples_generated"] >= 5)
    disk_full(app)
    paused = wait_for(lambda: (s := state())["in_flight"] == 0 and (s["waiting_reason"] or "").startswith("storage:")
                      and s)
    assert paused["status"] == "running" and paused["running"] is True
    assert "database or disk is full" in paused["waiting_reason"] and "dataset.sqlite3" in paused["waiting_reason"]
    storage_errors = [e for e in paused["errors"] if e.get("kind") == "storage"]
    assert len(storage_errors) == 1 and "database or disk is full" in storage_errors[0]["error"]
    history = client.get("/api/generate/batch/history").get_json()["batches"][0]
    assert history["id"] == batch_id and any(e.get("kind") == "storage" for e in history["errors"])
    assert client.get("/api/health").get_json()["status"] == "degraded"

    # Paused: the retries are small writes, not provider calls.
    calls = fake.count()
    probes: set[str] = set()
    wait_for(lambda: probes.add(state()["waiting_until"]) or len(probes) >= 4)
    assert fake.count() == calls
    assert state()["samples_generated"] == paused["samples_generated"]

    disk_full(app, False)
    done = wait_for(lambda: (s := state()) and not s["running"] and s)
    assert done["status"] == "completed" and done["samples_generated"] == 30 and done["in_flight"] == 0
    assert done["waiting_reason"] is None and done["errors_total"] >= 1
    assert min(seen_in_flight) >= 0
    rows = client.get(f"/api/batch/{batch_id}/samples").get_json()["samples"]
    assert len(rows) == 30 and len({r["id"] for r in rows}) == 30
    assert client.get("/api/stats").get_json()["total"] == 30
    assert client.get("/api/health").get_json()["status"] == "ok"

    # A sample dropped because the write failed left no reservation behind: its question is free.
    stored = {r["question"] for r in rows}
    stored_ids = {r["id"] for r in rows}
    dropped = [q for q in dict.fromkeys(generated) if q not in stored]
    assert dropped   # at least the samples that met the full disk
    for n, question in enumerate(dropped):
        response = client.post("/api/add", json=sample(f"free{n}", question))
        assert response.status_code == 200 or response.get_json().get("duplicate_of") in stored_ids, \
            response.get_json()


def test_a_batch_stopped_while_paused_stops_at_once(make_app, fake):
    fake.latency = 0.02
    app = make_app(BATCH)
    client = app.test_client()
    batch_id = client.post("/api/generate/batch/start", json={"target_count": 30}).get_json()["batch_id"]
    wait_for(lambda: status(client, batch_id)["samples_generated"] >= 2)
    disk_full(app)
    wait_for(lambda: (status(client, batch_id)["waiting_reason"] or "").startswith("storage:"))
    assert client.post("/api/generate/batch/stop", json={"batch_id": batch_id}).status_code == 200
    stopped = status(client, batch_id)
    assert stopped["status"] == "stopped" and stopped["running"] is False and stopped["in_flight"] >= 0
    runs = app.extensions["services"].batches._runs
    wait_for(lambda: not runs[batch_id].alive())
    disk_full(app, False)



# -- a real full disk -------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A 32 MB tmpfs (room for the WAL and the full-text index; needs root and a kernel that lets it mount one; skipped otherwise)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path) -> Path:
    """Write a file until the disk has no space left (unbuffered: nothing is left to flush)."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def test_a_real_full_disk_pauses_the_server_and_freeing_space_resumes_it(small_disk, tmp_path, fake):
    from tests.test_process import USER_CONFIG, ServerProcess

    fake.latency = 0.05
    server = ServerProcess(tmp_path, fake)
    (tmp_path / "providers.yaml").write_text(USER_CONFIG.replace(
        "heartbeat_seconds: 0.5", "heartbeat_seconds: 0.5\n  storage_retry_seconds: 0.2"))
    server.env["DATA_DIR"] = str(small_disk)
    server.start()
    try:
        batch_id = server.post("/api/generate/batch/start", {"target_count": 60}).json()["batch_id"]

        def state() -> dict:
            return server.get(f"/api/generate/batch/status?batch_id={batch_id}")

        wait_for(lambda: state()["samples_generated"] >= 5)
        filler = fill(small_disk)
        paused = wait_for(lambda: (s := state())["in_flight"] == 0
                          and (s["waiting_reason"] or "").startswith("storage:") and s, timeout=30)
        assert paused["running"] and "database or disk is full" in paused["waiting_reason"]
        assert str(small_disk / "dataset.sqlite3") in paused["waiting_reason"]
        health = server.get("/api/health")
        assert health["status"] == "degraded" and "database or disk is full" in health["store"]["error"]
        calls, probes = fake.count(), set()
        wait_for(lambda: probes.add(state()["waiting_until"]) or len(probes) >= 3)
        assert fake.count() == calls                     # no provider call while writes fail

        filler.unlink()                                  # space again: the batch carries on by itself
        done = wait_for(lambda: (s := state()) and not s["running"] and s, timeout=60)
        assert done["status"] == "completed" and done["samples_generated"] == 60
        assert server.get("/api/stats")["total"] == 60
        assert server.get("/api/health")["status"] == "ok"
    finally:
        server.stop()
    log = server.log.read_text()
    assert "Traceback" not in log and "database or disk is full" in log
