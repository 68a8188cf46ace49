"""Real servers (`python -m api_server` subprocesses) on one PostgreSQL database and one fake
provider: the lease holder SIGKILLed mid-batch, two servers importing the same rows at once.
Skipped, with the reason, when PostgreSQL cannot be reached."""
from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

import httpx
import pytest

from tests.conftest import wait_for
from tests.postgres import postgres_url  # noqa: F401 - fixture
from tests.test_process import ServerProcess

LEASE_SECONDS = "2"
pytestmark = pytest.mark.postgres_only


@pytest.fixture
def cluster(tmp_path: Path, fake, postgres_url: str):
    made: list[ServerProcess] = []

    def start(count: int, **env: str) -> list[ServerProcess]:
        for _ in range(count):
            home = tmp_path / f"server{len(made)}"
            home.mkdir()
            made.append(ServerProcess(home, fake, DATABASE_URL=postgres_url, BATCH_LEASE_SECONDS=LEASE_SECONDS,
                                      **env).start())
        return made

    yield start
    for server in made:
        server.stop()


def holder_of(server: ServerProcess) -> str | None:
    lease = server.get("/api/health")["cluster"]["lease"]
    return lease["holder"] if lease else None


def pid_of(server_id: str) -> int:
    return int(server_id.rsplit(":", 1)[1])


def test_sigkill_of_the_lease_holder_another_server_finishes_at_the_exact_target(cluster, fake):
    fake.latency = 0.08
    servers = cluster(3)
    first, second, third = servers
    response = second.post("/api/generate/batch/start", {"target_count": 40, "sample_type": "balance"})
    assert response.status_code == 200, response.text
    batch_id = response.json()["batch_id"]
    for other in (first, third):   # one batch system-wide: 409 from every server
        refused = other.post("/api/generate/batch/start", {"target_count": 50})
        assert refused.status_code == 409 and batch_id in refused.json()["error"]
    health = first.get("/api/health")
    assert health["batch_generation_running"] is True
    assert health["cluster"]["lease"]["batch_id"] == batch_id
    assert {s["id"] for s in health["cluster"]["servers"]} >= {holder_of(second)}
    wait_for(lambda: first.get(f"/api/generate/batch/status?batch_id={batch_id}")["samples_generated"] >= 8,
             timeout=60)

    holder = holder_of(first)
    victim = next(s for s in servers if s.proc.pid == pid_of(holder))
    victim.kill(signal.SIGKILL)
    survivors = [s for s in servers if s is not victim]

    new_holder = wait_for(lambda: (h := holder_of(survivors[0])) not in (None, holder) and h, timeout=30)
    assert pid_of(new_holder) in {s.proc.pid for s in survivors}
    state = wait_for(lambda: (s := survivors[0].get(f"/api/generate/batch/status?batch_id={batch_id}"))
                     and not s["running"] and s, timeout=90)
    assert state["status"] == "completed" and state["samples_generated"] == 40
    assert state["resumed_count"] == 1
    rows = survivors[1].get(f"/api/batch/{batch_id}/samples")["samples"]
    assert len(rows) == 40 and len({r["id"] for r in rows}) == 40 and len({r["question"] for r in rows}) == 40
    everything = httpx.get(survivors[1].base + "/api/data?limit=1000", timeout=30).json()
    assert len(everything) == 40                      # the whole dataset, read from the database
    assert survivors[0].get("/api/health")["cluster"]["lease"] is None


WINDOW = 6.0   # a "minute" of the limiter (time_scale 0.1) and the fake's window
LIMIT = 6
RATE_CONFIG = f"""
engine:
  cooldowns: {{rate_limit: 2, server_error: 1, timeout: 2}}
  pacing: {{time_scale: {WINDOW / 60}, jitter_seconds: 0.4}}   # this busy machine delays a sent request by 100s of ms
providers:
  groq:
    models: [{{id: g-large, limits: {{rpm: {LIMIT}}}}}]
"""


def most_in_any_window(times: list[float], window: float) -> int:
    times = sorted(times)
    return max((sum(1 for t in times[i:] if t < start + window) for i, start in enumerate(times)), default=0)


def test_three_servers_together_stay_inside_one_provider_limit(cluster, fake):
    """Each server alone would pace itself to the limit; together they share one budget."""
    fake.limit("g-large", rpm=LIMIT, window=WINDOW)
    servers = cluster(3, user_config=RATE_CONFIG, CEREBRAS_API_KEY="", GENERATE_MAX_WAIT="60")
    body = {"practice_area": "Tort Law", "topic": "Nuisance", "difficulty": "basic", "sample_type": "case_analysis",
            "provider": "groq", "model": "g-large", "save": False}
    answers: list[int] = []
    refusals: list[str] = []
    barrier = threading.Barrier(len(servers) * 3)

    def generate(server: ServerProcess) -> None:
        barrier.wait()
        for _ in range(2):
            response = httpx.post(server.base + "/api/generate", json=body, timeout=120)
            answers.append(response.status_code)
            if response.status_code != 200:
                refusals.append(response.text)

    threads = [threading.Thread(target=generate, args=(s,)) for s in servers for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sent = [r.at for r in fake.requests if r.model == "g-large"]
    assert answers == [200] * 18, refusals
    assert fake.statuses[429] == 0
    assert len(sent) == 18 and most_in_any_window(sent, WINDOW) <= LIMIT


def test_stop_from_a_server_that_does_not_run_the_batch(cluster, fake):
    fake.latency = 0.08
    runner, other = cluster(2)
    batch_id = runner.post("/api/generate/batch/start", {"target_count": 200}).json()["batch_id"]
    wait_for(lambda: runner.get(f"/api/generate/batch/status?batch_id={batch_id}")["samples_generated"] >= 2,
             timeout=60)
    stopped = other.post("/api/generate/batch/stop", {"batch_id": batch_id}).json()
    assert stopped["stopped"] is True
    assert runner.get(f"/api/generate/batch/status?batch_id={batch_id}")["status"] == "stopped"
    assert other.get("/api/health")["batch_generation_running"] is False


def test_two_servers_importing_the_same_rows_store_each_question_once(cluster):
    a, b = cluster(2)
    rows = [{"id": f"imp-{n}", "question": f"Question number {n}: what does section {n} of the Act require?",
             "answer": "It requires notice. " * 5, "topic": "Contract Law - Formation", "difficulty": "basic",
             "case_citation": "Carlill v Carbolic Smoke Ball Co [1893] 1 QB 256",
             "reasoning": "Step 1: read the section. Step 2: apply it."} for n in range(300)]
    # the same questions under different ids too: only a unique constraint stops these
    rows += [{**row, "id": f"copy-{n}"} for n, row in enumerate(rows[:100])]
    content = "\n".join(json.dumps(row) for row in rows)
    results: dict[str, httpx.Response] = {}
    barrier = threading.Barrier(2)

    def send(server: ServerProcess) -> None:
        barrier.wait()
        results[server.base] = httpx.post(server.base + "/api/import/jsonl?skip_invalid=true",
                                          json={"content": content}, timeout=120)

    threads = [threading.Thread(target=send, args=(s,)) for s in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.status_code == 200 for r in results.values()), [r.text for r in results.values()]
    assert sum(r.json()["imported"] for r in results.values()) == 300
    data = httpx.get(a.base + "/api/data?limit=10000", timeout=30).json()
    assert len(data) == 300 and len({r["question"] for r in data}) == 300
