"""`uk-law` as a person runs it: the installed entry point as its own process, against the real
server process (`python -m api_server`) whose providers are the fake ones (`simulator/server.py`).

The fake providers answer only when the test opens a gate, so a batch holds still until the client
has shown it, and every step waits on something observable (a line of output, a batch's state);
all waits are bounded."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from simulator.server import FakeProviderServer
from tests.conftest import wait_for
from tests.test_process import ServerProcess

UK_LAW = Path(sys.executable).parent / "uk-law"     # the [project.scripts] entry point, installed by make
TOKEN = "cli-test-token"


class Gate:
    """The fake providers' latency: every call waits until the gate is open (at most 30 s)."""

    def __init__(self) -> None:
        self.opened = threading.Event()

    def __call__(self) -> float:
        self.opened.wait(30)
        return 0.0

    def open(self) -> None:
        self.opened.set()

    def close(self) -> None:
        self.opened.clear()


class Cli:
    """One `uk-law` process; its output is read as it comes, so a test can wait for a line."""

    def __init__(self, cwd: Path, server: str, *args: str, token: str | None = None,
                 command: list[str] | None = None):
        env = {k: v for k, v in os.environ.items() if k not in ("API_TOKEN", "UK_LAW_SERVER", "COLUMNS")}
        env["UK_LAW_SERVER"] = server
        if token:
            env["API_TOKEN"] = token
        self.proc = subprocess.Popen([*(command or [str(UK_LAW)]), *args], cwd=cwd, env=env, text=True,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [threading.Thread(target=self._read, args=(stream, lines), daemon=True)
                         for stream, lines in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream, lines: list[str]) -> None:
        for line in stream:
            lines.append(line.rstrip("\n"))

    def wait_for_line(self, pattern: str, timeout: float = 30) -> str:
        def found() -> str | None:
            match = next((line for line in self.out if re.search(pattern, line)), None)
            assert match or self.proc.poll() is None, f"exited {self.proc.returncode}: {self.out} {self.err}"
            return match
        return wait_for(found, timeout=timeout)

    def finish(self, timeout: float = 60) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        for reader in self._readers:
            reader.join(timeout=10)
        return code

    @property
    def stdout(self) -> str:
        return "\n".join(self.out)

    @property
    def stderr(self) -> str:
        return "\n".join(self.err)


def run_cli(cwd: Path, server: str, *args: str, token: str | None = None, timeout: float = 60) -> Cli:
    cli = Cli(cwd, server, *args, token=token)
    cli.finish(timeout)
    return cli


@pytest.fixture
def gate(fake: FakeProviderServer):
    gate = Gate()
    fake.latency = gate
    yield gate
    gate.open()          # no provider call stays held after the test


@pytest.fixture
def servers(tmp_path, fake):
    started: list[ServerProcess] = []

    def start(**env: str) -> ServerProcess:
        server = ServerProcess(tmp_path, fake, **env).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def state(server: ServerProcess, batch_id: str) -> dict:
    return server.get(f"/api/generate/batch/status?batch_id={batch_id}")


def batch_id_in(cli: Cli) -> str:
    return re.search(r"started batch (batch_\d+_[0-9a-f]{8})", cli.wait_for_line("started batch")).group(1)


def test_the_entry_point_is_installed():
    assert UK_LAW.is_file(), "run `make test`: it installs the project, and with it the uk-law command"
    result = subprocess.run([str(UK_LAW), "--version"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and result.stdout.startswith("uk-law, version ")


def test_start_and_follow_a_batch_to_completion(tmp_path, servers, gate):
    server = servers()
    cli = Cli(tmp_path, server.base, "batch", "start", "--target", "12", "--sample-type", "balance", "--follow")
    batch_id = batch_id_in(cli)
    first = cli.wait_for_line(r"\b0/12 \(0%\)")        # the bar's first update, while the providers hold
    gate.open()
    assert cli.finish() == 0, cli.stdout + cli.stderr
    out = cli.stdout
    assert "0/12" in first and "ETA" in first and "/min" in first
    assert re.search(r"\b12/12 \(100%\).*ETA 0:00:00", out)
    assert f"batch {batch_id} completed: 12/12 samples" in out and cli.stderr == ""
    progress = [line for line in cli.out if re.search(r"\d+/12 \(\d+%\)", line)]
    assert len(progress) >= 2                           # at least one update before the final count
    assert state(server, batch_id)["status"] == "completed" and server.get("/api/stats")["total"] == 12


def test_follow_reconnects_when_the_server_restarts(tmp_path, servers, gate, fake):
    first = servers()
    cli = Cli(tmp_path, first.base, "batch", "start", "--target", "8", "--follow")
    batch_id = batch_id_in(cli)
    cli.wait_for_line(r"\b0/8\b")
    first.kill(signal.SIGKILL)
    cli.wait_for_line("lost the event stream")

    again = ServerProcess(tmp_path, fake)              # same data directory, same address
    again.port, again.base, again.env["PORT"] = first.port, first.base, str(first.port)
    again.start()
    try:
        gate.open()
        assert cli.finish() == 0, cli.stdout + cli.stderr
    finally:
        again.stop()
    out = cli.stdout
    assert "reconnected to the event stream" in out and "the server restarted; batch resumed" in out
    assert f"batch {batch_id} completed: 8/8 samples" in out


def test_stop_from_another_terminal_ends_the_follower_non_zero(tmp_path, servers, gate):
    server = servers(API_TOKEN=TOKEN)
    started = httpx.post(server.base + "/api/generate/batch/start", json={"target_count": 50}, timeout=10,
                         headers={"Authorization": f"Bearer {TOKEN}"})
    batch_id = started.json()["batch_id"]
    follower = Cli(tmp_path, server.base, "batch", "follow")          # no id: the running batch
    follower.wait_for_line(r"\b0/50\b")

    refused = run_cli(tmp_path, server.base, "batch", "stop", batch_id)  # writes need the token
    assert refused.proc.returncode == 1 and refused.stdout == ""
    assert refused.err == ["uk-law: error: the server answered 401: this request changes data: send "
                           "Authorization: Bearer <API_TOKEN> (set the API_TOKEN environment variable to the "
                           "server's token)"]
    assert state(server, batch_id)["running"] is True

    stopped = run_cli(tmp_path, server.base, "batch", "stop", batch_id, token=TOKEN)
    assert stopped.proc.returncode == 0 and stopped.stdout == f"batch {batch_id} stopped"
    assert follower.finish() == 4
    assert f"batch {batch_id} stopped at 0/50 samples" in follower.stdout
    assert state(server, batch_id)["status"] == "stopped"

    again = run_cli(tmp_path, server.base, "batch", "follow", batch_id)   # an ended batch: said at once
    assert again.proc.returncode == 4 and "stopped at 0/50" in again.stdout
    status = run_cli(tmp_path, server.base, "batch", "status", batch_id)
    assert status.proc.returncode == 0 and batch_id in status.stdout and "stopped" in status.stdout
    history = run_cli(tmp_path, server.base, "batch", "history")
    assert history.proc.returncode == 0 and batch_id in history.stdout and "0/50" in history.stdout


def test_stats_and_export_match_the_api(tmp_path, servers, gate):
    gate.open()
    server = servers()
    batch_id = server.post("/api/generate/batch/start", {"target_count": 15, "sample_type": "balance"}).json()["batch_id"]
    wait_for(lambda: not state(server, batch_id)["running"], timeout=60)

    stats = run_cli(tmp_path, server.base, "stats")
    assert stats.proc.returncode == 0, stats.stderr
    detailed = server.get("/api/stats/detailed")["stats"]
    assert "Dataset: 15 samples" in stats.stdout
    for row in detailed["practice_areas"]:
        assert re.search(rf"{re.escape(row['practice_area'])}\s+│\s+{row['len']}\b", stats.stdout)
    as_json = run_cli(tmp_path, server.base, "stats", "--json")
    assert json.loads(as_json.stdout) == {"stats": server.get("/api/stats"), "detailed": detailed}

    for fmt, query, args in (("jsonl", "", ()), ("csv", "", ()), ("parquet", "", ()),
                             ("jsonl", "&difficulty=expert&clean=true", ("--difficulty", "expert", "--clean"))):
        target = tmp_path / f"dataset{len(query)}.{fmt}"
        exported = run_cli(tmp_path, server.base, "export", "--format", fmt, "-o", str(target), *args)
        assert exported.proc.returncode == 0, exported.stderr
        expected = httpx.get(f"{server.base}/api/export?format={fmt}{query}", timeout=30)
        assert target.read_bytes() == expected.content
        assert f"wrote {expected.headers['X-Total-Count']} sample(s) as {fmt}" in exported.stderr
    piped = run_cli(tmp_path, server.base, "export", "-o", "-")
    assert piped.stdout + "\n" == httpx.get(f"{server.base}/api/export?format=jsonl", timeout=30).text


def test_an_unreachable_server_is_one_line_and_a_non_zero_exit(tmp_path):
    # A port bound but not listening refuses connections, and no other process can take it meanwhile.
    with socket.socket() as reserved:
        reserved.bind(("127.0.0.1", 0))
        nowhere = f"http://127.0.0.1:{reserved.getsockname()[1]}"
        for command in ([str(UK_LAW)], [sys.executable, "-m", "cli"]):
            for args in (("batch", "follow"), ("batch", "start", "--target", "5", "--follow"), ("stats",),
                         ("export", "-o", str(tmp_path / "x.jsonl"))):
                cli = Cli(tmp_path, nowhere, *args, command=command)
                assert cli.finish() == 1, (args, cli.out, cli.err)
                assert cli.out == [] and len(cli.err) == 1, (args, cli.out, cli.err)
                assert cli.err[0] == (f"uk-law: error: cannot reach the server at {nowhere} (connection refused); "
                                      "is it running? Set --server or UK_LAW_SERVER to its address")
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_detaches_and_the_batch_keeps_running(tmp_path, servers, gate):
    server = servers()
    cli = Cli(tmp_path, server.base, "batch", "start", "--target", "10", "--follow")
    batch_id = batch_id_in(cli)
    cli.wait_for_line(r"\b0/10\b")
    cli.proc.send_signal(signal.SIGINT)
    assert cli.finish(timeout=30) == 130
    assert f"detached at 0/10; batch {batch_id} keeps running on the server" in cli.stdout
    assert "Traceback" not in cli.stderr and state(server, batch_id)["running"] is True
    gate.open()                                           # the batch goes on without anyone watching
    done = wait_for(lambda: (s := state(server, batch_id)) and not s["running"] and s, timeout=60)
    assert done["status"] == "completed" and done["samples_generated"] == 10

    gate.close()
    cli = Cli(tmp_path, server.base, "batch", "start", "--target", "30", "--follow", "--stop-on-interrupt")
    batch_id = batch_id_in(cli)
    cli.wait_for_line(r"\b0/20\b")
    cli.proc.send_signal(signal.SIGINT)
    assert cli.finish(timeout=30) == 130
    assert f"interrupted at 0/20: batch {batch_id} stopped" in cli.stdout
    assert state(server, batch_id)["status"] == "stopped"
