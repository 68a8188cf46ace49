"""PostgreSQL going away under a running server: a real server process whose connections to the
database pass through a TCP proxy the test cuts (every pooled connection really breaks and new
ones are refused) and restores. Reads answer 503 with the write failure's JSON shape and a
Retry-After while it is cut, /api/health answers 200 "degraded", everything answers 200 again
by itself once it is back, the background threads carry on (another server's write reaches this
server's statistics), a running batch waits and then ends exactly at its target, and the log says
it once each way."""
from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from storage.postgres import PostgresDatabase
from storage.store import Store
from tests.conftest import wait_for
from tests.postgres import postgres_url  # noqa: F401 - fixture
from tests.tcp_proxy import TcpProxy
from tests.test_process import ServerProcess
from tests.test_store import record

pytestmark = pytest.mark.postgres_only

READS = ("/api/data", "/api/data?limit=5&offset=0&difficulty=basic", "/api/stats", "/api/stats/detailed",
         "/api/search?q=nuisance", "/api/generate/batch/status", "/api/generate/batch/history",
         "/api/sample/s0", "/api/samples/random?count=2")


@pytest.fixture
def proxy():
    proxy = TcpProxy(5432)
    yield proxy
    proxy.close()


def answer(server: ServerProcess, path: str) -> httpx.Response:
    return httpx.get(server.base + path, timeout=30)


def test_reads_answer_503_while_the_database_is_away_and_recover_by_themselves(tmp_path: Path, fake, proxy,
                                                                               postgres_url: str):
    other = Store(PostgresDatabase(postgres_url))    # another server, straight to the database
    other.add_many([record(f"s{n}") for n in range(3)])
    proxied = postgres_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}", 1)
    assert proxied != postgres_url
    server = ServerProcess(tmp_path, fake, DATABASE_URL=proxied, BATCH_LEASE_SECONDS="2").start()
    try:
        for path in READS:
            assert answer(server, path).status_code == 200, path
        assert answer(server, "/api/stats").json()["total"] == 3

        proxy.cut()
        for path in READS:
            response = wait_for(lambda: (r := answer(server, path)).status_code == 503 and r, timeout=30)
            body = response.json()
            assert body["success"] is False and body["error"].startswith("storage: cannot reach postgresql://"), body
            assert response.headers["Retry-After"].isdigit(), path
        started = time.monotonic()                        # once it is known to be away: at once
        assert all(answer(server, path).status_code == 503 for path in READS)
        assert time.monotonic() - started < 2 * len(READS)
        health = answer(server, "/api/health")
        assert health.status_code == 200, health.text
        body = health.json()
        assert body["status"] == "degraded" and body["ready"] is False and body["store"]["writable"] is False
        assert "cannot reach" in body["store"]["error"] and body["total_samples"] is None
        assert "error" in body["cluster"]

        proxy.restore()
        for path in READS:
            wait_for(lambda: answer(server, path).status_code == 200, timeout=30)
        wait_for(lambda: answer(server, "/api/health").json()["status"] == "ok", timeout=30)
        assert "error" not in answer(server, "/api/health").json()["cluster"]   # the lease keeper goes on
        other.add(record("after"))                          # another server's write...
        # ...followed (the change feed reads committed rows below the oldest transaction running in
        # this database: another session's long write transaction in it delays them)
        wait_for(lambda: answer(server, "/api/stats").json()["total"] == 4, timeout=90)
    finally:
        server.stop()
        other.close()
    log = server.log.read_text()
    assert log.count("is unavailable") == 1, log       # one line when it went...
    assert log.count("answers again (after") == 1, log  # ...one when it came back
    assert "Traceback" not in log, log


def test_a_batch_pauses_while_the_database_is_away_and_ends_exactly_at_its_target_once_back(
        tmp_path: Path, fake, proxy, postgres_url: str):
    """The running batch stops calling providers while it cannot store (at most the samples in
    flight when the database went), and carries on by itself when it is back: exactly its target,
    no question twice, nothing in the log but the one line each way."""
    fake.latency = 0.05
    proxied = postgres_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}", 1)
    server = ServerProcess(tmp_path, fake, DATABASE_URL=proxied).start()
    try:
        started = httpx.post(server.base + "/api/generate/batch/start", json={"target_count": 40}, timeout=30)
        batch_id = started.json()["batch_id"]

        def status() -> dict:
            return answer(server, f"/api/generate/batch/status?batch_id={batch_id}").json()

        wait_for(lambda: status()["samples_generated"] >= 5, timeout=60)
        calls_at_cut = fake.count()
        proxy.cut()
        wait_for(lambda: answer(server, "/api/health").json()["status"] == "degraded", timeout=30)
        stored_meanwhile = 0
        for _ in range(30):                                   # health checks while it stays away
            assert answer(server, "/api/health").json()["store"]["writable"] is False
            stored_meanwhile = fake.count() - calls_at_cut
        assert stored_meanwhile <= 4, stored_meanwhile        # max_in_flight: no calls burnt in a loop

        proxy.restore()
        done = wait_for(lambda: (s := status()).get("running") is False and s, timeout=120)   # 503s first
        assert done["status"] == "completed" and done["samples_generated"] == 40, done
    finally:
        server.stop()
    check = Store(PostgresDatabase(postgres_url))
    try:
        rows = list(check.iter_records({"batch_id": batch_id}))
    finally:
        check.close()
    assert len(rows) == 40 and len({r["question"] for r in rows}) == 40
    log = server.log.read_text()
    assert log.count("is unavailable") == 1 and "Traceback" not in log, log
