"""Process exit in-process: `BatchManager.shutdown(timeout)` returns within its one overall budget,
abandons workers waiting on a provider, drops their late answers, and the batch resumes exactly."""
from __future__ import annotations

import threading
import time

from simulator.server import Reply
from tests.conftest import wait_for

SIXTEEN = {"batch": {"max_in_flight": 16, "max_wait_seconds": 2, "heartbeat_seconds": 0.2}}
ALL_MODELS = ("g-large", "g-small", "c-large", "c-small")


def start(client, target: int) -> str:
    response = client.post("/api/generate/batch/start", json={"target_count": target})
    assert response.status_code == 200, response.get_json()
    return response.get_json()["batch_id"]


def status(client, batch_id: str) -> dict:
    return client.get(f"/api/generate/batch/status?batch_id={batch_id}").get_json()


def workers_alive(batch_id: str) -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith(batch_id + "-") and t.is_alive())


def running_with(client, fake, target: int) -> str:
    """A batch running with its first samples stored (so every worker may call the first model)."""
    fake.latency = 0.02
    batch_id = start(client, target)
    wait_for(lambda: status(client, batch_id)["samples_generated"] >= 3)
    return batch_id


def test_shutdown_with_sixteen_hung_provider_calls_returns_at_once(make_app, fake):
    app = make_app(SIXTEEN)
    client, svc = app.test_client(), app.extensions["services"]
    batch_id = running_with(client, fake, target=60)
    for model in ALL_MODELS:
        fake.always(model, Reply(hang=True))
    wait_for(lambda: fake.held == 16, timeout=30)

    started = time.monotonic()
    svc.batches.shutdown(timeout=2)
    elapsed = time.monotonic() - started
    assert elapsed < 1.0, f"shutdown took {elapsed:.2f}s with 16 hung provider calls"   # nothing to wait for
    assert workers_alive(batch_id) == 16          # abandoned where they wait, not waited for
    state = status(client, batch_id)
    assert state["status"] == "running" and state["running"] is True     # left to resume
    refused = client.post("/api/generate/batch/start", json={"target_count": 100})
    assert refused.status_code == 503 and "shutting down" in refused.get_json()["error"]
    assert int(refused.headers["Retry-After"]) > 0


def test_shutdown_waits_for_database_work_only_until_its_one_overall_deadline(make_app, fake):
    app = make_app(SIXTEEN)
    client, svc = app.test_client(), app.extensions["services"]
    armed, inside, release = threading.Event(), threading.Event(), threading.Event()

    def slow_write(change) -> None:   # a storage write that takes far longer than the budget
        if armed.is_set():
            inside.set()
            release.wait(30)

    svc.store.on_change(slow_write)
    batch_id = running_with(client, fake, target=60)
    armed.set()
    try:
        wait_for(inside.is_set)   # one worker is inside the write, holding the batch lock
        started = time.monotonic()
        svc.batches.shutdown(timeout=1)
        elapsed = time.monotonic() - started
        assert 1.0 <= elapsed < 2.0, f"shutdown(timeout=1) took {elapsed:.2f}s"   # one budget, not 16
    finally:
        release.set()
    wait_for(lambda: workers_alive(batch_id) == 0)
    assert status(client, batch_id)["status"] == "running"


def test_answers_arriving_after_shutdown_are_dropped_and_the_batch_resumes_exactly(make_app, fake, tmp_path):
    target = 40
    shared = tmp_path / "shared"
    first = make_app(SIXTEEN, data_dir=shared)
    client, svc = first.test_client(), first.extensions["services"]
    batch_id = running_with(client, fake, target=target)
    gate = threading.Event()
    for model in ALL_MODELS:
        fake.always(model, Reply(gate=gate))    # every provider call waits for the gate
    wait_for(lambda: fake.held == 16, timeout=30)
    stored = svc.store.count()

    started = time.monotonic()
    svc.batches.shutdown(timeout=2)
    assert time.monotonic() - started < 1.0
    gate.set()                                  # 16 valid samples arrive after the shutdown
    wait_for(lambda: fake.held == 0 and workers_alive(batch_id) == 0)
    assert svc.store.count() == stored          # none of them was stored
    state = status(client, batch_id)
    assert state["status"] == "running" and state["samples_generated"] == stored
    svc.store.close()

    for model in ALL_MODELS:
        fake.always(model, None)
    second = make_app(SIXTEEN, data_dir=shared)
    client2 = second.test_client()
    state = wait_for(lambda: (s := status(client2, batch_id)) and not s["running"] and s, timeout=60)
    assert state["status"] == "completed" and state["samples_generated"] == target and state["resumed_count"] == 1
    rows = client2.get(f"/api/batch/{batch_id}/samples").get_json()["samples"]
    assert len(rows) == target and len({r["id"] for r in rows}) == target
    assert len({r["question"] for r in rows}) == target
    assert client2.get("/api/stats").get_json()["total"] == target
