"""The batch event stream: Server-Sent Events parsing, and one batch's states across reconnects.

The server sends `data: {"type": "all_batches", "batches": {...}}` on connect, then
`data: {"type": "batch_update", "batch_id": ..., "batch": <state>}` on every change, and a
`: heartbeat` comment during silence. A fresh connection starts with a fresh `all_batches` frame,
so reconnecting loses nothing that matters: the state is whole in every frame.
"""
from __future__ import annotations

import json
import time
from typing import Any, Callable, Iterable, Iterator

import httpx

from cli.client import ApiClient, CliError, StreamUnavailable

HEARTBEAT = object()          # a comment line: the connection is alive
FIRST_RETRY_SECONDS = 0.5
MAX_RETRY_SECONDS = 5.0


def frames(lines: Iterable[str]) -> Iterator[Any]:
    """Each event's JSON payload (a dict), or HEARTBEAT for a comment. Malformed events are skipped."""
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                text, data = "\n".join(data), []
                try:
                    payload = json.loads(text)
                except ValueError:
                    continue
                if isinstance(payload, dict):
                    yield payload
            continue
        if line.startswith(":"):
            yield HEARTBEAT
            continue
        name, _, value = line.partition(":")
        if name == "data":
            data.append(value[1:] if value.startswith(" ") else value)


class BatchWatch:
    """The states of one batch, from the event stream, until it is no longer running.

    When the stream drops (the server restarts, the network blips, a read times out because not even a
    heartbeat came) it reconnects with a growing pause, and gives up with a CliError only after
    `give_up_after` seconds without a working stream. `notice` is told about each loss and recovery."""

    def __init__(self, client: ApiClient, batch_id: str, *, notice: Callable[[str], None],
                 read_timeout: float = 75.0, give_up_after: float = 600.0,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic):
        self.client = client
        self.batch_id = batch_id
        self.notice = notice
        self.read_timeout = read_timeout
        self.give_up_after = give_up_after
        self.sleep = sleep
        self.clock = clock
        self.reconnects = 0

    def states(self) -> Iterator[dict[str, Any]]:
        failing_since: float | None = None
        pause = FIRST_RETRY_SECONDS
        while True:
            try:
                with self.client.events(self.read_timeout) as lines:
                    if failing_since is not None:
                        self.reconnects += 1
                        self.notice("reconnected to the event stream")
                    failing_since, pause = None, FIRST_RETRY_SECONDS
                    for payload in frames(lines):
                        state = self._state_in(payload)
                        if state is None:
                            continue
                        yield state
                        if not state.get("running"):
                            return
                problem, wait = "the server closed the event stream", None
            except StreamUnavailable as exc:
                problem, wait = str(exc), exc.retry_after
            except httpx.HTTPError as exc:
                problem, wait = _describe(exc), None
            now = self.clock()
            if failing_since is None:
                failing_since = now
                self.notice(f"lost the event stream ({problem}); reconnecting")
            elif now - failing_since > self.give_up_after:
                raise CliError(f"no event stream from {self.client.base} for {self.give_up_after:g} s "
                               f"({problem}); giving up. The batch may still be running: "
                               f"uk-law batch status {self.batch_id}")
            self.sleep(wait if wait is not None else pause)
            pause = min(pause * 2, MAX_RETRY_SECONDS)

    def _state_in(self, payload: Any) -> dict[str, Any] | None:
        if not isinstance(payload, dict):
            return None
        if payload.get("type") == "all_batches":
            batches = payload.get("batches")
            state = batches.get(self.batch_id) if isinstance(batches, dict) else None
            if state is None:   # an older batch, outside the recent ones the frame carries
                state = self.client.get("/api/generate/batch/status", {"batch_id": self.batch_id})
            return state if isinstance(state, dict) else None
        if payload.get("type") == "batch_update" and payload.get("batch_id") == self.batch_id:
            state = payload.get("batch")
            return state if isinstance(state, dict) else None
        return None


def _describe(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.ReadTimeout):
        return "nothing arrived, not even a heartbeat"
    if isinstance(exc, httpx.ConnectError):
        return "the server is unreachable"
    text = str(exc) or type(exc).__name__
    return text[:1].lower() + text[1:]
