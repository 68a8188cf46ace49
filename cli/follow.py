"""Following a batch: a progress bar (or, off a terminal, progress lines) driven by the event stream,
with waits, model and provider switches and lost samples printed as they happen.

`Tracker` turns successive states into the things worth saying; `BarView` (a rich progress bar) and
`LineView` (plain lines for logs and pipes) show them; `follow` ties the stream to a view and returns
the exit code the batch's end deserves.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn
from rich.text import Text

from cli.client import ApiClient, CliError
from cli.events import BatchWatch

# Exit codes of `batch follow` (and `batch start --follow`); 1 is any error, 2 a usage error (click).
EXIT_COMPLETED, EXIT_ERROR, EXIT_FAILED, EXIT_STOPPED, EXIT_INTERRUPTED = 0, 1, 3, 4, 130
EXIT_FOR_STATUS = {"completed": EXIT_COMPLETED, "failed": EXIT_FAILED, "stopped": EXIT_STOPPED}
REPEAT_WAIT_AFTER_SECONDS = 30.0   # the same wait reason is said again only after this long


@dataclass(frozen=True)
class Event:
    kind: str          # wait, model_switch, provider_switch, error, skipped, resumed, connection
    text: str


# -- formatting ---------------------------------------------------------------------------------

def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def clock_time(value: Any) -> str:
    parsed = parse_time(value)
    return parsed.astimezone().strftime("%H:%M:%S") if parsed else "?"


def duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)) or seconds < 0:
        return "-:--:--"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def rate(state: dict[str, Any]) -> str:
    value = state.get("rate_per_minute")
    return f"{value:.1f}/min" if isinstance(value, (int, float)) and value > 0 else "-/min"


def where(state: dict[str, Any]) -> str:
    provider = state.get("current_provider") or state.get("provider")
    model = state.get("current_model") or state.get("model")
    if provider and model:
        return f"{provider}/{model}"
    return provider or model or "choosing a model"


def count(state: dict[str, Any]) -> str:
    return f"{state.get('samples_generated', 0)}/{state.get('total', 0)}"


def elapsed(state: dict[str, Any]) -> str:
    started, ended = parse_time(state.get("started_at")), parse_time(state.get("completed_at"))
    if started is None:
        return "?"
    return duration(((ended or datetime.now(timezone.utc)) - started).total_seconds())


def progress_line(state: dict[str, Any]) -> str:
    total = state.get("total") or 0
    percent = int(100 * state.get("samples_generated", 0) / total) if total else 100
    return (f"{count(state)} ({percent}%)  {rate(state)}  ETA {duration(state.get('eta_seconds'))}  "
            f"{where(state)}")


def ending(state: dict[str, Any]) -> str:
    batch_id, status = state.get("batch_id"), state.get("status")
    if status == "completed":
        cost = state.get("cost_usd")
        spent = f" (${cost:,.4f})" if isinstance(cost, (int, float)) and not isinstance(cost, bool) else ""
        return (f"batch {batch_id} completed: {count(state)} samples, {state.get('total_tokens', 0):,} tokens{spent}, "
                f"in {elapsed(state)}")
    if status == "failed":
        return f"batch {batch_id} failed at {count(state)} samples: {state.get('final_error') or 'no reason given'}"
    if status == "stopped":
        return f"batch {batch_id} stopped at {count(state)} samples after {elapsed(state)}"
    return f"batch {batch_id} ended ({status}) at {count(state)} samples"


# -- what changed -------------------------------------------------------------------------------

class Tracker:
    """Compares each state with the one before and says what happened in between. Lists in the state
    are bounded (the latest entries, with `*_total` counting all), so the totals tell how many are new."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.previous: dict[str, Any] | None = None
        self._wait_said: tuple[str, float] | None = None
        self._skipped_seen: set[tuple[Any, Any]] = set()

    def changes(self, state: dict[str, Any]) -> list[Event]:
        before, self.previous = self.previous, state
        events: list[Event] = []
        if before is None:
            self._skipped_seen = {_skip_key(s) for s in _entries(state, "skipped_topics")}
            events += self._history_so_far(state)
        else:
            events += self._new(before, state, "model_switches", "model_switch", _model_switch)
            events += self._new(before, state, "provider_switches", "provider_switch", _provider_switch)
            events += self._new(before, state, "errors", "error", _error)
            events += self._skips(state)
            if (state.get("resumed_count") or 0) > (before.get("resumed_count") or 0):
                events.append(Event("resumed", f"the server restarted; batch resumed at {count(state)}"))
        events += self._wait(state)
        return events

    def _history_so_far(self, state: dict[str, Any]) -> list[Event]:
        parts = [f"{state.get(key) or 0} {label}" for key, label in (
            ("model_switches_total", "model switch(es)"), ("provider_switches_total", "provider switch(es)"),
            ("errors_total", "error(s)")) if state.get(key)]
        return [Event("history", "so far: " + ", ".join(parts))] if parts else []

    def _new(self, before: dict[str, Any], state: dict[str, Any], key: str, kind: str,
             describe: Callable[[dict[str, Any]], str | None]) -> list[Event]:
        new = (state.get(f"{key}_total") or 0) - (before.get(f"{key}_total") or 0)
        if new <= 0:
            return []
        entries = _entries(state, key)
        shown = entries[-new:] if new <= len(entries) else entries
        events = [Event(kind, text) for entry in shown if (text := describe(entry))]
        if new > len(shown):
            events.insert(0, Event(kind, f"({new - len(shown)} earlier {key.replace('_', ' ')} not shown)"))
        return events

    def _skips(self, state: dict[str, Any]) -> list[Event]:
        events = []
        for entry in _entries(state, "skipped_topics"):
            key = _skip_key(entry)
            if key not in self._skipped_seen:
                self._skipped_seen.add(key)
                events.append(Event("skipped", f"topic {entry.get('topic')} skipped until "
                                               f"{clock_time(entry.get('until'))}: {entry.get('reason')}"))
        return events

    def _wait(self, state: dict[str, Any]) -> list[Event]:
        reason = state.get("waiting_reason")
        if not reason or not state.get("running"):
            return []
        now = self.clock()
        if self._wait_said and self._wait_said[0] == reason and now - self._wait_said[1] < REPEAT_WAIT_AFTER_SECONDS:
            return []
        self._wait_said = (reason, now)
        until = parse_time(state.get("waiting_until"))
        when = ""
        if until is not None:
            left = max(0.0, (until - datetime.now(timezone.utc)).total_seconds())
            when = f" until {clock_time(state.get('waiting_until'))} ({left:.0f} s)"
        return [Event("wait", f"waiting{when}: {reason}")]


def _entries(state: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = state.get(key)
    return [e for e in value if isinstance(e, dict)] if isinstance(value, list) else []


def _skip_key(entry: dict[str, Any]) -> tuple[Any, Any]:
    return entry.get("topic"), entry.get("until")


def _model_switch(entry: dict[str, Any]) -> str:
    return (f"model switch on {entry.get('provider')}: {entry.get('from_model')} → {entry.get('to_model')} "
            f"({entry.get('reason')})")


def _provider_switch(entry: dict[str, Any]) -> str:
    return (f"provider switch: {entry.get('from_provider')}/{entry.get('from_model')} → "
            f"{entry.get('to_provider')}/{entry.get('to_model')} ({entry.get('reason')})")


def _error(entry: dict[str, Any]) -> str | None:
    if entry.get("fatal"):
        return None        # the ending line says it
    topic = f" [{entry['topic']}]" if entry.get("topic") else ""
    return f"sample failed{topic}: {entry.get('error')}"


# -- views --------------------------------------------------------------------------------------

STYLES = {"wait": "yellow", "model_switch": "cyan", "provider_switch": "magenta", "error": "red",
          "skipped": "yellow", "resumed": "green", "connection": "yellow", "history": "dim"}


class View(Protocol):
    def __enter__(self) -> "View": ...
    def __exit__(self, *exc: object) -> None: ...
    def update(self, state: dict[str, Any]) -> None: ...
    def say(self, event: Event) -> None: ...
    def end(self, text: str, ok: bool) -> None: ...


class LineView:
    """Plain lines, for logs and pipes: a progress line when the count moves (at most every
    `interval` seconds, always the first and the last), and one line per event."""

    def __init__(self, console: Console, interval: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self.console = console
        self.interval = interval
        self.clock = clock
        self._last: tuple[Any, float] | None = None

    def __enter__(self) -> "LineView":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def _line(self, text: str, style: str | None = None) -> None:
        stamp = datetime.now().strftime("%H:%M:%S")
        self.console.print(Text(f"{stamp}  {text}", style=style or ""), soft_wrap=True)

    def update(self, state: dict[str, Any]) -> None:
        now = self.clock()
        generated = state.get("samples_generated")
        final = not state.get("running")
        if self._last is not None:
            if generated == self._last[0] or (not final and now - self._last[1] < self.interval):
                return
        self._last = (generated, now)
        self._line(progress_line(state))

    def say(self, event: Event) -> None:
        self._line(event.text, STYLES.get(event.kind))

    def end(self, text: str, ok: bool) -> None:
        self._line(text, "bold green" if ok else "bold red")


class BarView:
    """A rich progress bar: count/target, percent, rate, ETA and the provider/model at work; events
    are printed above it as they happen."""

    def __init__(self, console: Console, batch_id: str):
        self.console = console
        self.progress = Progress(
            TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
            TaskProgressColumn(), TextColumn("{task.fields[rate]}", markup=False),
            TextColumn("ETA {task.fields[eta]}", markup=False), TextColumn("{task.fields[where]}", markup=False),
            console=console, transient=False, refresh_per_second=4)
        self.task = self.progress.add_task(batch_id, total=None, rate="-/min", eta="-:--:--", where="")

    def __enter__(self) -> "BarView":
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, state: dict[str, Any]) -> None:
        self.progress.update(self.task, completed=state.get("samples_generated") or 0, total=state.get("total") or 0,
                             rate=rate(state), eta=duration(state.get("eta_seconds")),
                             where=("waiting" if state.get("waiting_reason") else where(state)))

    def say(self, event: Event) -> None:
        self.progress.console.print(Text(event.text, style=STYLES.get(event.kind, "")), soft_wrap=True)

    def end(self, text: str, ok: bool) -> None:
        self.progress.refresh()
        self.progress.stop()
        self.console.print(Text(text, style="bold green" if ok else "bold red"), soft_wrap=True)


def make_view(console: Console, batch_id: str, plain: bool | None) -> View:
    if plain or (plain is None and not console.is_terminal):
        return LineView(console)
    return BarView(console, batch_id)


# -- following ----------------------------------------------------------------------------------

def pick_batch(client: ApiClient, batch_id: str | None) -> tuple[str, str | None]:
    """The batch to follow or stop: the one named (checked to exist), else the running one, else the
    latest. Returns (batch id, a note for the user or None)."""
    if batch_id:
        client.get("/api/generate/batch/status", {"batch_id": batch_id})   # 404 names an unknown id
        return batch_id, None
    listing = client.get("/api/generate/batch/status")
    batches = listing.get("batches") if isinstance(listing, dict) else None
    states = [s for s in (batches or {}).values() if isinstance(s, dict) and s.get("batch_id")]
    if not states:
        raise CliError("no batch has run yet; start one with: uk-law batch start --target N")
    states.sort(key=lambda s: str(s.get("started_at") or ""), reverse=True)
    running = [s for s in states if s.get("running")]
    if running:
        return running[0]["batch_id"], None
    latest = states[0]
    return latest["batch_id"], f"no batch is running; the latest is {latest['batch_id']} ({latest.get('status')})"


def follow(client: ApiClient, batch_id: str, console: Console, *, plain: bool | None = None,
           stop_on_interrupt: bool = False, read_timeout: float = 75.0, give_up_after: float = 600.0) -> int:
    """Follow one batch to its end; returns the exit code (0 completed, 3 failed, 4 stopped, 130
    interrupted). Ctrl-C detaches and leaves the batch running, unless `stop_on_interrupt`."""
    tracker = Tracker()
    view = make_view(console, batch_id, plain)
    watch = BatchWatch(client, batch_id, notice=lambda text: view.say(Event("connection", text)),
                       read_timeout=read_timeout, give_up_after=give_up_after)
    last: dict[str, Any] | None = None
    states = watch.states()
    try:
        with view, contextlib.closing(states):
            for state in states:
                last = state
                for event in tracker.changes(state):
                    view.say(event)
                view.update(state)
                if not state.get("running"):
                    code = EXIT_FOR_STATUS.get(str(state.get("status")), EXIT_ERROR)
                    view.end(ending(state), code == EXIT_COMPLETED)
                    return code
    except KeyboardInterrupt:
        pass
    # Ctrl-C (the stream never ends by itself: `states` returns only when the batch stops running)
    where_now = f" at {count(last)}" if last else ""
    if stop_on_interrupt:
        try:
            answer = client.post("/api/generate/batch/stop", {"batch_id": batch_id})
        except KeyboardInterrupt:
            answer = {"message": "not confirmed (interrupted again)"}
        console.print(Text(f"interrupted{where_now}: {answer.get('message', 'stop requested')}"), soft_wrap=True)
    else:
        console.print(Text(f"detached{where_now}; batch {batch_id} keeps running on the server "
                           f"(uk-law batch follow {batch_id} to watch again, uk-law batch stop {batch_id} to stop it)"),
                      soft_wrap=True)
    return EXIT_INTERRUPTED
