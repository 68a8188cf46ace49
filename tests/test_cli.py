"""The `uk-law` client in-process: its event-stream parsing, what it says about a batch, its errors,
and following a scripted stream that drops, refuses and ends. The real server and real processes
are in tests/test_cli_process.py."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

import pytest
from click.testing import CliRunner

from cli.client import ApiClient, CliError
from cli.events import HEARTBEAT, BatchWatch, frames
from cli.follow import Tracker
from cli.main import cli
from tests.conftest import ManualClock

BATCH = "batch_1700000000_0000abcd"


def state(**changes: Any) -> dict[str, Any]:
    base = {"batch_id": BATCH, "running": True, "status": "running", "samples_generated": 0, "total": 5,
            "target_count": 5, "start_count": 0, "total_tokens": 0, "current_provider": "groq",
            "current_model": "g-large", "started_at": "2024-01-01T10:00:00+00:00", "completed_at": None,
            "rate_per_minute": 0.0, "eta_seconds": None, "errors": [], "errors_total": 0, "model_switches": [],
            "model_switches_total": 0, "provider_switches": [], "provider_switches_total": 0,
            "skipped_topics": [], "waiting_until": None, "waiting_reason": None, "resumed_count": 0,
            "final_error": None}
    return {**base, **changes}


def sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload)}\n\n"


def all_batches(*states: dict[str, Any]) -> str:
    return sse({"type": "all_batches", "batches": {s["batch_id"]: s for s in states}})


def update(s: dict[str, Any]) -> str:
    return sse({"type": "batch_update", "batch_id": s["batch_id"], "batch": s})


class ScriptedServer:
    """A stand-in for the server: JSON routes from a dict, and an event stream that answers each
    connection from a script (a 503, or frames followed by the server closing the stream)."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Callable[[dict[str, list[str]], dict], tuple[int, Any, dict]]] = {}
        self.streams: list[tuple[int, str, dict[str, str]]] = []
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.stream_connections = 0
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args: Any) -> None:
                return

            def _answer(self, method: str) -> None:
                url = urlsplit(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                scripted.requests.append((method, self.path, dict(self.headers), body))
                if url.path == "/api/generate/batch/stream":
                    scripted.stream_connections += 1
                    status, text, headers = scripted.streams.pop(0) if scripted.streams else (503, "{}", {})
                    self.send_response(status)
                    self.send_header("Content-Type", "text/event-stream" if status == 200 else "application/json")
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(text.encode())
                    return   # HTTP/1.0: closing the connection ends the stream
                route = scripted.routes.get((method, url.path))
                if route is None:
                    status, answer, headers = 404, {"success": False, "error": "not found"}, {}
                else:
                    status, answer, headers = route(parse_qs(url.query), json.loads(body) if body else {})
                data = answer.encode() if isinstance(answer, str) else json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", headers.pop("Content-Type", "application/json"))
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._answer("GET")

            def do_POST(self) -> None:
                self._answer("POST")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def json(self, method: str, path: str, answer: Any, status: int = 200, **headers: str) -> None:
        self.routes[(method, path)] = lambda query, body: (status, answer, dict(headers))


@pytest.fixture
def scripted():
    server = ScriptedServer()
    server.thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


def run(server: ScriptedServer, *args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(cli, ["--server", server.url, *args], env={"API_TOKEN": None, **(env or {})})


# -- the stream ----------------------------------------------------------------------------------

def test_frames_parses_data_lines_comments_and_skips_malformed_events():
    lines = ['data: {"type": "all_batches",', 'data:  "batches": {}}', "", ": heartbeat", "", "event: x",
             "data: not json", "", "data: [1, 2]", "", 'data:{"type": "batch_update"}', "", "data: {}"]
    assert list(frames(lines)) == [{"type": "all_batches", "batches": {}}, HEARTBEAT, {"type": "batch_update"}]


def test_following_survives_a_dropped_stream_and_a_busy_server_then_exits_0(scripted):
    other = state(batch_id="batch_1700000001_ffffffff", samples_generated=9)
    switched = state(samples_generated=3, rate_per_minute=30.0, eta_seconds=4.0, model_switches_total=1,
                     model_switches=[{"provider": "groq", "from_model": "g-large", "to_model": "g-small",
                                      "reason": "429 rate_limit"}])
    done = {**switched, "samples_generated": 5, "running": False, "status": "completed",
            "completed_at": "2024-01-01T10:00:09+00:00", "total_tokens": 4321}
    scripted.json("GET", "/api/generate/batch/status", state(samples_generated=2))   # asked when a frame lacks it
    scripted.streams = [
        (200, all_batches(state(samples_generated=1)), {}),                # then the server closes the stream
        (503, '{"success": false, "error": "too many open event streams"}', {"Retry-After": "0"}),
        (200, all_batches(other) + ": heartbeat\n\n" + update(other) + update(switched) + update(done), {}),
    ]
    result = run(scripted, "batch", "follow", BATCH)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "1/5" in out and "lost the event stream (the server closed the event stream)" in out
    assert "reconnected to the event stream" in out and "9/5" not in out     # another batch's frames are not ours
    assert ("GET", f"/api/generate/batch/status?batch_id={BATCH}") in [r[:2] for r in scripted.requests]
    assert "model switch on groq: g-large → g-small (429 rate_limit)" in out
    assert f"batch {BATCH} completed: 5/5 samples, 4,321 tokens, in 0:00:09" in out
    assert scripted.stream_connections == 3


@pytest.mark.parametrize("status, code, words", [("failed", 3, "failed at 2/5 samples: no_recovery: every key rejected"),
                                                   ("stopped", 4, "stopped at 2/5 samples")])
def test_a_batch_that_fails_or_is_stopped_exits_non_zero(scripted, status, code, words):
    ended = state(samples_generated=2, running=False, status=status, completed_at="2024-01-01T10:01:00+00:00",
                  final_error="no_recovery: every key rejected" if status == "failed" else None,
                  errors_total=1, errors=[{"error": "no_recovery: every key rejected", "fatal": True}])
    scripted.json("GET", "/api/generate/batch/status", ended)
    scripted.streams = [(200, all_batches(ended), {})]
    result = run(scripted, "batch", "follow", BATCH)
    assert result.exit_code == code and words in result.stdout
    assert "sample failed" not in result.stdout      # the fatal error is said once, in the ending


def test_without_an_id_follow_picks_the_running_batch(scripted):
    old = state(batch_id="batch_1600000000_00000000", running=False, status="completed", samples_generated=5,
                started_at="2023-01-01T00:00:00+00:00")
    current = state(started_at="2024-01-01T10:00:00+00:00")
    done = {**current, "samples_generated": 5, "running": False, "status": "completed"}
    scripted.json("GET", "/api/generate/batch/status", {"batches": {old["batch_id"]: old, BATCH: current}, "count": 2})
    scripted.streams = [(200, all_batches(old, current) + update(done), {})]
    result = run(scripted, "batch", "follow")
    assert result.exit_code == 0 and f"batch {BATCH} completed" in result.stdout


def test_the_watch_gives_up_after_its_limit_without_a_stream(scripted):
    clock = ManualClock()
    scripted.streams = [(503, '{"success": false, "error": "busy"}', {"Retry-After": "2"})] * 20
    notices: list[str] = []
    watch = BatchWatch(ApiClient(scripted.url), BATCH, notice=notices.append, give_up_after=10,
                       sleep=clock.advance, clock=clock)
    with pytest.raises(CliError, match="no event stream .* for 10 s \\(busy\\); giving up"):
        list(watch.states())
    assert notices == ["lost the event stream (busy); reconnecting"]    # said once, not on every retry
    assert scripted.stream_connections == 7                            # every 2 s (Retry-After) until past 10 s


# -- what it says --------------------------------------------------------------------------------

def test_the_tracker_reports_only_what_is_new():
    clock = ManualClock()
    tracker = Tracker(clock=clock)
    first = state(model_switches_total=3, errors_total=2)
    assert [e.text for e in tracker.changes(first)] == ["so far: 3 model switch(es), 2 error(s)"]
    switches = [{"from_provider": "groq", "from_model": f"g{i}", "to_provider": "cerebras", "to_model": "c",
                 "reason": f"r{i}"} for i in range(3)]
    second = state(model_switches_total=3, errors_total=3, provider_switches_total=5, provider_switches=switches,
                   errors=[{"error": "old"}, {"error": "invalid output", "topic": "Tort Law - Nuisance"}],
                   waiting_reason="every candidate is cooling down", waiting_until="2024-01-01T10:00:30+00:00")
    events = tracker.changes(second)
    assert [e.kind for e in events] == ["provider_switch"] * 4 + ["error", "wait"]
    assert events[0].text == "(2 earlier provider switches not shown)"
    assert events[1].text == "provider switch: groq/g0 → cerebras/c (r0)"
    assert events[4].text == "sample failed [Tort Law - Nuisance]: invalid output"
    assert events[5].text.startswith("waiting until ") and events[5].text.endswith(": every candidate is cooling down")
    assert tracker.changes(second) == []                         # the same wait is not said again at once
    clock.advance(31)
    assert [e.kind for e in tracker.changes(second)] == ["wait"]  # ... but is after a while
    resumed = {**second, "resumed_count": 1, "skipped_topics": [{"topic": "Tax Law - VAT", "reason": "invalid",
                                                                  "until": "2024-01-01T10:05:00+00:00"}]}
    assert [e.kind for e in tracker.changes(resumed)] == ["skipped", "resumed"]


def test_stats_summarises_both_endpoints(scripted):
    scripted.json("GET", "/api/stats", {"total": 4, "file_size_kb": 2048.0, "total_topics": 3, "total_difficulties": 2,
                                        "difficulty_distribution": [], "top_topics": []})
    scripted.json("GET", "/api/stats/detailed", {"success": True, "stats": {
        "total_samples": 4, "unique_topics": 3, "unique_practice_areas": 2,
        "avg_lengths": {"question": 120.5, "answer": 1500.0, "reasoning": 300.0, "case_citation": 40.0},
        "difficulty_breakdown": [{"difficulty": "basic", "count": 3, "avg_question_length": 100.0,
                                  "avg_answer_length": 1400.0},
                                 {"difficulty": "expert", "count": 1, "avg_question_length": 180.0,
                                  "avg_answer_length": 1800.0}],
        "practice_areas": [{"practice_area": "Tort Law", "len": 3}, {"practice_area": "Tax Law", "len": 1}],
        "topic_breakdown": [{"topic": "Tort Law - Nuisance", "len": 2}, {"topic": "Tort Law - Defamation", "len": 1},
                            {"topic": "Tax Law - VAT", "len": 1}]}})
    result = run(scripted, "stats", "--top", "2")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "Dataset: 4 samples · 2.0 MB on disk · 3 topics in 2 practice areas" in out
    assert "question 120.5, answer 1,500, reasoning 300, case citation 40" in out
    assert "Top 2 of 3 topics" in out and "Tort Law - Nuisance" in out and "Tax Law - VAT" not in out
    assert "75%" in out and "Tax Law" in out
    as_json = json.loads(run(scripted, "stats", "--json").stdout)
    assert as_json["stats"]["total"] == 4 and as_json["detailed"]["unique_topics"] == 3


# -- errors --------------------------------------------------------------------------------------

def one_line_error(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("uk-law: error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def test_the_servers_error_message_is_shown_in_one_line(scripted):
    scripted.json("POST", "/api/generate/batch/start", {"success": False, "error": "target_count 3 must be larger\n"
                                                        "than the current dataset size (7)"}, status=400)
    result = run(scripted, "batch", "start", "--target", "3")
    assert result.exit_code == 1
    assert one_line_error(result) == ("uk-law: error: the server answered 400: target_count 3 must be larger than "
                                      "the current dataset size (7)")


def test_writes_send_the_token_and_a_401_says_which_variable_to_set(scripted):
    scripted.json("POST", "/api/generate/batch/stop", {"success": False, "error": "send Authorization"}, status=401)
    result = run(scripted, "batch", "stop", BATCH)
    assert result.exit_code == 1 and "API_TOKEN" in one_line_error(result)
    assert "authorization" not in {k.lower() for k in scripted.requests[-1][2]}
    scripted.json("POST", "/api/generate/batch/stop", {"success": True, "message": f"batch {BATCH} stopped"})
    result = run(scripted, "batch", "stop", BATCH, env={"API_TOKEN": "s3cret"})
    assert result.exit_code == 0 and result.stdout.strip() == f"batch {BATCH} stopped"
    method, path, headers, body = scripted.requests[-1]
    assert headers["Authorization"] == "Bearer s3cret" and json.loads(body) == {"batch_id": BATCH}
    result = run(scripted, "batch", "stop", env={"API_TOKEN": "café"})
    assert result.exit_code == 1 and one_line_error(result) == "uk-law: error: API_TOKEN must be printable ASCII"


def test_a_server_that_is_not_ours_is_named(scripted):
    scripted.json("GET", "/api/generate/batch/history", "<html>hello</html>", **{"Content-Type": "text/html"})
    result = run(scripted, "batch", "history")
    assert result.exit_code == 1 and "is it the uk-law server?" in one_line_error(result)


def test_a_bad_server_address_is_a_one_line_error():
    result = CliRunner().invoke(cli, ["--server", "ftp://example", "stats"])
    assert result.exit_code == 1 and "must be an http(s) address" in one_line_error(result)


def test_export_picks_the_format_from_the_file_name_and_leaves_no_file_on_error(scripted, tmp_path):
    rows = b'{"id": "a"}\n{"id": "b"}\n'
    scripted.routes[("GET", "/api/export")] = lambda query, body: (
        (200, rows.decode(), {"Content-Type": "application/x-ndjson", "X-Total-Count": "2"})
        if query.get("format") == ["jsonl"] and query.get("clean") == ["true"] and "difficulty" not in query
        else (400, {"success": False, "error": f"unexpected query {query}"}, {}))
    target = tmp_path / "out.jsonl"
    result = run(scripted, "export", "-o", str(target), "--clean")
    assert result.exit_code == 0, result.output
    assert target.read_bytes() == rows and "wrote 2 sample(s) as jsonl" in result.stderr
    failed = tmp_path / "failed.jsonl"
    result = run(scripted, "export", "-o", str(failed), "--difficulty", "expert")
    assert result.exit_code == 1 and "400" in one_line_error(result)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]     # no partial or empty file
    result = run(scripted, "export", "-o", str(tmp_path))
    assert result.exit_code == 1 and "is a directory" in one_line_error(result)


def test_usage_errors_exit_2():
    result = CliRunner().invoke(cli, ["batch", "start"])
    assert result.exit_code == 2 and "--target" in result.output
    result = CliRunner().invoke(cli, ["export", "--format", "xml", "-o", "x"])
    assert result.exit_code == 2


def test_batch_start_sends_models_and_strategy_and_status_shows_routing_and_cost(scripted):
    scripted.json("POST", "/api/generate/batch/start", {
        "success": True, "batch_id": BATCH, "total": 5, "target_count": 5, "provider": "groq", "model": None,
        "models": ["cerebras/c-small", "groq/g-small"], "strategy": "cheapest"})
    result = run(scripted, "batch", "start", "--target", "5", "--models", "cerebras/c-small, groq/g-small",
                 "--strategy", "cheapest")
    assert result.exit_code == 0, result.output
    assert json.loads(scripted.requests[-1][3]) == {"target_count": 5, "models": ["cerebras/c-small", "groq/g-small"],
                                                   "strategy": "cheapest"}
    assert "cerebras/c-small, then groq/g-small (strategy: cheapest)" in result.stdout
    scripted.json("GET", "/api/generate/batch/status", state(
        requested_models=["cerebras/c-small", "groq/g-small"], strategy="cheapest", cost_usd=0.01234))
    out = run(scripted, "batch", "status", BATCH).stdout
    assert "requested: cerebras/c-small, groq/g-small" in out and "cheapest" in out and "$0.0123" in out
    scripted.json("GET", "/api/generate/batch/history", {"success": True, "count": 1, "batches": [
        {"id": BATCH, "status": "completed", "samples_generated": 5, "target": 5, "tokens_used": 900,
         "cost_usd": 0.5, "started_at": "2024-01-01T10:00:00+00:00"}]})
    assert "$0.5000" in run(scripted, "batch", "history").stdout
