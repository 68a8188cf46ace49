"""Proactive rate limiting per (provider, model), shared by all threads.

Each configured limit (requests and tokens per minute, hour, day) is a sliding window. A request
reserves one request and its estimated tokens (prompt + max_completion_tokens) in every window at
once, or learns how long to wait; when the call ends the reservation settles to the real usage.
The providers' rate-limit headers correct the local view: a reported limit replaces the
configured one, and if the provider says fewer units remain than we think, the difference is
held until the provider's reset time.

Written here rather than with `limits`: that library cannot settle a reservation to a different
cost afterwards, nor absorb a provider's remaining/reset readings.
"""
from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

from config.providers import Limits
from providers.headers import PERIOD_SECONDS, WindowReading

# limit name -> (metric, period)
WINDOW_NAMES: dict[str, tuple[str, str]] = {
    "rpm": ("requests", "minute"), "rph": ("requests", "hour"), "rpd": ("requests", "day"),
    "tpm": ("tokens", "minute"), "tph": ("tokens", "hour"), "tpd": ("tokens", "day"),
}
_NAME_OF = {v: k for k, v in WINDOW_NAMES.items()}


def window_label(name: str) -> str:
    """"tpm" -> "tokens per minute"."""
    metric, period = WINDOW_NAMES.get(name, (name, ""))
    return f"{metric} per {period}" if period else name


class Wait(float):
    """Seconds until a request fits (inf: never), with the windows that hold it back."""

    windows: tuple[str, ...]

    def __new__(cls, seconds: float, windows: tuple[str, ...] = ()) -> "Wait":
        wait = super().__new__(cls, seconds)
        wait.windows = windows
        return wait


class _Entry:
    __slots__ = ("at", "amount", "live")

    def __init__(self, at: float, amount: float):
        self.at = at
        self.amount = amount
        self.live = True


class _Window:
    """Units used over the last `span` seconds. Entries expire a little after `span` (the grace
    period) because the provider counts a request when it arrives, a moment after we sent it."""

    def __init__(self, limit: float, span: float):
        self.limit = limit
        self.span = span
        self.expiry = span + min(1.0, 0.01 * span)
        self.entries: deque[_Entry] = deque()
        self.used = 0.0

    def _prune(self, now: float) -> None:
        entries = self.entries
        while entries and entries[0].at + self.expiry <= now:
            expired = entries.popleft()
            expired.live = False
            self.used -= expired.amount
        if not entries:
            self.used = 0.0

    def wait_for(self, amount: float, now: float) -> float:
        """Seconds until `amount` more units fit (0 now, inf never)."""
        if amount > self.limit:
            return math.inf
        self._prune(now)
        excess = self.used + amount - self.limit
        if excess <= 0:
            return 0.0
        freed = 0.0
        for entry in self.entries:
            freed += entry.amount
            if freed >= excess:
                return max(0.0, entry.at + self.expiry - now)
        return self.expiry

    def add(self, amount: float, at: float) -> _Entry:
        entry = _Entry(at, amount)
        if self.entries and at < self.entries[-1].at:
            # Keep the deque ordered by expiry (held entries may start in the past).
            items = sorted([*self.entries, entry], key=lambda e: e.at)
            self.entries = deque(items)
        else:
            self.entries.append(entry)
        self.used += amount
        return entry

    def adjust(self, entry: _Entry, amount: float) -> None:
        if entry.live:
            self.used += amount - entry.amount
        entry.amount = amount

    def remaining(self, now: float) -> float:
        self._prune(now)
        return max(0.0, self.limit - self.used)


@dataclass
class Reservation:
    provider: str
    model: str
    tokens: int
    entries: dict[str, _Entry] = field(default_factory=dict)
    settled: bool = False


class RateLimiter:
    def __init__(self, limits: Mapping[tuple[str, str], Limits], clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, str], dict[str, _Window]] = {}
        for key, configured in limits.items():
            self._windows[key] = {
                name: _Window(float(value), PERIOD_SECONDS[WINDOW_NAMES[name][1]])
                for name, value in configured.model_dump().items() if value is not None
            }

    def _windows_for(self, provider: str, model: str) -> dict[str, _Window]:
        return self._windows.setdefault((provider, model), {})

    def reserve(self, provider: str, model: str, tokens: int) -> Reservation | Wait:
        """A reservation, or the seconds to wait before this request fits (inf: it never will),
        as a `Wait` naming the windows that hold it back."""
        now = self._clock()
        with self._lock:
            windows = self._windows_for(provider, model)
            wait = self._wait(windows, tokens, now)
            if wait > 0:
                return wait
            reservation = Reservation(provider, model, tokens)
            for name, window in windows.items():
                amount = 1 if WINDOW_NAMES[name][0] == "requests" else tokens
                reservation.entries[name] = window.add(amount, now)
            return reservation

    def wait_time(self, provider: str, model: str, tokens: int) -> Wait:
        """What `reserve` would answer for `tokens`, without reserving: 0 when it fits now."""
        now = self._clock()
        with self._lock:
            return self._wait(self._windows_for(provider, model), tokens, now)

    @staticmethod
    def _wait(windows: dict[str, _Window], tokens: int, now: float) -> Wait:
        waits = {name: window.wait_for(1 if WINDOW_NAMES[name][0] == "requests" else tokens, now)
                 for name, window in windows.items()}
        longest = max(waits.values(), default=0.0)
        if longest <= 0:
            return Wait(0.0)
        holding = sorted((name for name, wait in waits.items() if wait > 0), key=lambda n: -waits[n])
        return Wait(longest, tuple(holding))   # the window that holds it longest first

    def settle(self, reservation: Reservation, used_tokens: int | None) -> None:
        """Replace the estimate with the real token count (None keeps the estimate)."""
        if reservation.settled:
            return
        with self._lock:
            reservation.settled = True
            if used_tokens is None:
                return
            windows = self._windows_for(reservation.provider, reservation.model)
            for name, entry in reservation.entries.items():
                if WINDOW_NAMES[name][0] == "tokens" and name in windows:
                    windows[name].adjust(entry, float(max(0, used_tokens)))

    def observe(self, provider: str, model: str, readings: Iterable[WindowReading]) -> None:
        """Correct the local windows with what the provider reported."""
        now = self._clock()
        with self._lock:
            windows = self._windows_for(provider, model)
            for reading in readings:
                name = _NAME_OF.get((reading.metric, reading.period))
                if name is None:
                    continue
                span = PERIOD_SECONDS[reading.period]
                window = windows.get(name)
                if window is None:
                    if reading.limit is None:
                        continue
                    window = windows[name] = _Window(reading.limit, span)
                elif reading.limit is not None and reading.limit > 0:
                    window.limit = reading.limit
                if reading.remaining is None:
                    continue
                deficit = window.remaining(now) - reading.remaining
                if deficit > 0:
                    reset = reading.reset_seconds if reading.reset_seconds is not None else span
                    hold_from = now + min(reset, span) - window.expiry
                    window.add(min(deficit, window.limit), hold_from)

    def snapshot(self, provider: str, model: str) -> dict[str, dict[str, float]]:
        now = self._clock()
        with self._lock:
            return {name: {"limit": w.limit, "remaining": w.remaining(now)}
                    for name, w in self._windows_for(provider, model).items()}
