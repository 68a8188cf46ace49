"""The real server process: `python api_server.py` on waitress, SSE over a socket, SIGKILL mid-batch,
SIGTERM within its shutdown budget while provider calls hang."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from simulator.server import FakeProviderServer, Reply
from tests.conftest import CEREBRAS_KEY, GROQ_KEY, wait_for

ROOT = Path(__file__).resolve().parent.parent
# Tests whose servers keep a batch across a restart run on both passes (the servers store on
# DATABASE_URL when the PostgreSQL pass sets it); the others test signals and streams, the same
# code on either backend, so the PostgreSQL pass skips them (tests/conftest.py).
on_both = pytest.mark.both_backends
USER_CONFIG = """
engine:
  cooldowns: {rate_limit: 2, server_error: 1, timeout: 2}
batch:
  max_in_flight: 4
  heartbeat_seconds: 0.5
providers:
  groq:
    models: [{id: g-large}, {id: g-small}]
  cerebras:
    models: [{id: c-large}]
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    def __init__(self, tmp_path: Path, fake: FakeProviderServer, *, user_config: str = USER_CONFIG,
                 **env: str):
        config = tmp_path / "providers.yaml"
        config.write_text(user_config)
        self.port = free_port()
        self.env = {**os.environ, "PORT": str(self.port), "HOST": "127.0.0.1", "DATA_DIR": str(tmp_path / "data"),
                    "GROQ_API_KEY": GROQ_KEY, "CEREBRAS_API_KEY": CEREBRAS_KEY, "GROQ_BASE_URL": fake.url,
                    "CEREBRAS_BASE_URL": fake.url, "PROVIDER_CONFIG_FILE": str(config),
                    # PostgreSQL pass: a killed server's batch lease runs out in seconds, not 30
                    "BATCH_LEASE_SECONDS": "3", **env}
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = tmp_path / "server.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "ServerProcess":
        self.proc = subprocess.Popen([sys.executable, "-m", "api_server"], cwd=ROOT, env=self.env,
                                     stdout=self.log.open("ab"), stderr=subprocess.STDOUT)
        wait_for(self._healthy, timeout=30, interval=0.1)
        return self

    def _healthy(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.log.read_text()
        try:
            return httpx.get(self.base + "/api/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def get(self, path: str) -> dict:
        return httpx.get(self.base + path, timeout=10).json()

    def post(self, path: str, body: dict) -> httpx.Response:
        return httpx.post(self.base + path, json=body, timeout=10)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(timeout=30)

    def terminate_timed(self, sig: int = signal.SIGTERM, limit: float = 30) -> float:
        """Send `sig` and return the seconds until the process has exited (fails past `limit`)."""
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running {limit}s after signal {sig}") from None
        return time.monotonic() - started

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


@pytest.fixture
def server_factory(tmp_path, fake):
    servers: list[ServerProcess] = []

    def make(**kwargs: str) -> ServerProcess:
        server = ServerProcess(tmp_path, fake, **kwargs).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@on_both
def test_the_server_serves_health_and_streams_events(server_factory):
    server = server_factory()
    health = server.get("/api/health")
    assert health["status"] == "ok" and health["groq_configured"] is True
    with httpx.stream("GET", server.base + "/api/generate/batch/stream", timeout=10) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.iter_lines()
        first = next(lines)
        assert json.loads(first[len("data: "):]) == {"type": "all_batches", "batches": {}}
        started = time.monotonic()
        rest = [next(lines), next(lines)]
        assert ": heartbeat" in rest and time.monotonic() - started < 5  # arrives through waitress unbuffered


@on_both
def test_sigkill_mid_batch_then_restart_resumes_and_ends_exactly_at_target(server_factory, fake):
    fake.latency = 0.08
    server = server_factory()
    response = server.post("/api/generate/batch/start", {"target_count": 40, "sample_type": "balance"})
    batch_id = response.json()["batch_id"]
    wait_for(lambda: server.get(f"/api/generate/batch/status?batch_id={batch_id}")["samples_generated"] >= 8)
    server.kill(signal.SIGKILL)
    stored_before_restart = len(fake.requests)

    restarted = server_factory()
    state = wait_for(lambda: (s := restarted.get(f"/api/generate/batch/status?batch_id={batch_id}"))
                     and not s["running"] and s, timeout=60)
    assert state["status"] == "completed" and state["samples_generated"] == 40 and state["resumed_count"] == 1
    assert len(fake.requests) > stored_before_restart
    rows = restarted.get(f"/api/batch/{batch_id}/samples")["samples"]
    assert len(rows) == 40 and len({r["id"] for r in rows}) == 40 and len({r["question"] for r in rows}) == 40
    assert restarted.get("/api/stats")["total"] == 40
    assert restarted.get("/api/batches/stuck")["count"] == 0


@on_both
def test_sigterm_leaves_the_batch_to_resume(server_factory, fake):
    fake.latency = 0.08
    server = server_factory()
    batch_id = server.post("/api/generate/batch/start", {"target_count": 30}).json()["batch_id"]
    wait_for(lambda: server.get(f"/api/generate/batch/status?batch_id={batch_id}")["samples_generated"] >= 3)
    server.kill(signal.SIGTERM)
    assert server.proc.returncode == 0
    restarted = server_factory()
    state = wait_for(lambda: (s := restarted.get(f"/api/generate/batch/status?batch_id={batch_id}"))
                     and not s["running"] and s, timeout=60)
    assert state["status"] == "completed" and state["samples_generated"] == 30
    assert restarted.get("/api/stats")["total"] == 30


SHUTDOWN_BUDGET = 5.0   # SHUTDOWN_SECONDS' default
SIXTEEN_IN_FLIGHT = USER_CONFIG.replace("max_in_flight: 4", "max_in_flight: 16")
MODELS = ("g-large", "g-small", "c-large")


@on_both
def test_sigterm_with_every_provider_call_hanging_exits_within_the_budget_and_the_batch_resumes(tmp_path, fake):
    fake.latency = 0.05
    server = ServerProcess(tmp_path, fake, user_config=SIXTEEN_IN_FLIGHT).start()
    restarted = ServerProcess(tmp_path, fake, user_config=SIXTEEN_IN_FLIGHT)
    try:
        batch_id = server.post("/api/generate/batch/start", {"target_count": 60}).json()["batch_id"]
        wait_for(lambda: server.get(f"/api/generate/batch/status?batch_id={batch_id}")["samples_generated"] >= 2)
        for model in MODELS:
            fake.always(model, Reply(hang=True))      # no provider answers any more
        wait_for(lambda: fake.held == 16, timeout=30)
        assert server.get(f"/api/generate/batch/status?batch_id={batch_id}")["in_flight"] == 16

        seconds = server.terminate_timed(signal.SIGTERM)
        assert server.proc.returncode == 0, server.log.read_text()
        assert seconds < SHUTDOWN_BUDGET + 2, f"exited {seconds:.1f}s after SIGTERM"

        for model in MODELS:
            fake.always(model, None)                  # the providers answer again
        restarted.start()
        state = wait_for(lambda: (s := restarted.get(f"/api/generate/batch/status?batch_id={batch_id}"))
                         and not s["running"] and s, timeout=60)
        assert state["status"] == "completed" and state["samples_generated"] == 60 and state["resumed_count"] == 1
        rows = restarted.get(f"/api/batch/{batch_id}/samples")["samples"]
        assert len(rows) == 60 and len({r["id"] for r in rows}) == 60 and len({r["question"] for r in rows}) == 60
        assert restarted.get("/api/stats")["total"] == 60
    finally:
        server.stop()
        restarted.stop()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_while_a_single_generation_hangs_exits_within_the_budget(server_factory, fake, sig):
    server = server_factory(SHUTDOWN_SECONDS="3")
    for model in MODELS:
        fake.always(model, Reply(hang=True))
    outcome: list[object] = []

    def generate() -> None:
        try:
            outcome.append(httpx.post(server.base + "/api/generate", json={"topic": "Tort Law - Nuisance"},
                                      timeout=60))
        except httpx.HTTPError as exc:
            outcome.append(exc)

    caller = threading.Thread(target=generate, daemon=True)
    caller.start()
    wait_for(lambda: fake.held == 1)

    seconds = server.terminate_timed(sig)
    assert server.proc.returncode == 0, server.log.read_text()
    assert seconds < 3 + 2, f"exited {seconds:.1f}s after signal {sig}"
    caller.join(timeout=10)
    assert len(outcome) == 1 and isinstance(outcome[0], httpx.TransportError), outcome  # cut off, not answered
    assert fake.held == 1   # the provider never answered: the server did not wait for it


def test_a_second_server_on_the_same_data_directory_exits_at_once(server_factory, tmp_path, fake):
    first = server_factory()
    second = ServerProcess(tmp_path, fake)       # same DATA_DIR, another port
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "api_server"], cwd=ROOT, env=second.env, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 3 and time.monotonic() - started < 15
    message = result.stderr.strip().splitlines()[-1]
    assert str(tmp_path / "data") in message and f"pid {first.proc.pid}" in message
    assert f"127.0.0.1:{first.port}" in message
    assert first.get("/api/health")["status"] == "ok"    # the first one is untouched


def _health_seconds(probe: httpx.Client, server: ServerProcess) -> float:
    started = time.monotonic()
    assert probe.get(server.base + "/api/health").status_code == 200
    return time.monotonic() - started


def test_event_streams_are_bounded_so_the_api_keeps_answering(tmp_path, fake):
    # A long heartbeat: only the server's own check can notice a closed client within seconds.
    config = USER_CONFIG.replace("heartbeat_seconds: 0.5", "heartbeat_seconds: 15")
    server = ServerProcess(tmp_path, fake, user_config=config, SSE_MAX_STREAMS="4", SERVER_THREADS="16").start()
    url = server.base + "/api/generate/batch/stream"
    hang_up = threading.Event()
    results: list[tuple] = []
    held = ExitStack()
    # Clients made up front (each new one builds an SSL context, which would slow this process, not the server).
    probe = held.enter_context(httpx.Client(timeout=10))
    session = held.enter_context(httpx.Client(timeout=10, limits=httpx.Limits(max_connections=64,
                                                                               max_keepalive_connections=0)))

    def dashboard() -> None:
        try:
            with session.stream("GET", url) as response:
                if response.status_code != 200:
                    response.read()
                    results.append((response.status_code, response.headers.get("Retry-After"), response.json()))
                    return
                results.append((200, json.loads(next(response.iter_lines())[len("data: "):])))
                hang_up.wait(timeout=60)
        except Exception as exc:  # reported by the assertions below
            results.append(("error", repr(exc)))

    clients = [threading.Thread(target=dashboard, daemon=True) for _ in range(20)]
    try:
        for client in clients:
            client.start()
        latencies = []
        wait_for(lambda: latencies.append(_health_seconds(probe, server)) or len(results) == 20, timeout=30,
                 interval=0.05)
        latencies += [_health_seconds(probe, server) for _ in range(10)]   # and while the 4 streams stay open
        assert max(latencies) < 1.0, latencies

        streaming = [r for r in results if r[0] == 200]
        refused = [r for r in results if r[0] == 503]
        assert len(streaming) == 4 and len(refused) == 16, results
        assert all(first == {"type": "all_batches", "batches": {}} for _, first in streaming)
        for _, retry_after, body in refused:
            assert int(retry_after) > 0 and body["success"] is False and "event streams" in body["error"]

        hang_up.set()   # the four dashboards close their streams
        for client in clients:
            client.join(timeout=10)
        closed_at = time.monotonic()
        reopened: list[httpx.Response] = []

        def open_one_more() -> bool:
            response = session.send(session.build_request("GET", url), stream=True)
            if response.status_code == 200:
                held.callback(response.close)
                reopened.append(response)
            else:
                assert response.status_code == 503
                response.close()
            return len(reopened) == 4

        wait_for(open_one_more, timeout=10, interval=0.05)
        assert time.monotonic() - closed_at < 2.5   # every slot back within about a second or two
        assert _health_seconds(probe, server) < 1.0
    finally:
        hang_up.set()
        held.close()
        server.stop()
