"""The rate limiter's state: small, serializable records behind a store interface.

Everything the limiter remembers lives in one `ScopeState` per scope key: `"provider/model"` for a
model, `"provider/*"` for what a provider's models share (a learned provider-wide limit). A record
holds floats and a few short lists, so it serializes to a small JSON object (`to_dict`/`from_dict`):

* `tat`: per window (`rpm`, `tpm`, ...), the GCRA theoretical arrival time, i.e. the clock time by
  which everything admitted so far has drained at the window's rate;
* `log`: per token window paced evenly (`tpm`), the `[at, tokens]` admitted over the last window
  (a few dozen pairs at most), which keeps a sliding window of lumpy token costs exact;
* `reported`: limits the provider's headers declared; `learned`: limits learned from its 429s;
* the learning episode: `since`, `sent` and `rejected` (requests and tokens sent since `since`, and
  how many of them were refused with a 429), `reset_at` (when the window that last said "slow down" frees), `window_seconds` (its
  estimated length), `probe_at`/`probe_step` (the next upward probe), `hits` (429s taken), `basis` (what the latest
  estimate was measured on, corrected by the 429s that arrive late), `sends` (while a limit
  is learned, the requests and tokens carried over the last two windows, from `logged_from`: a
  429 then says the limit is what the window before it carried);
* on a provider scope, `recent`: the latest 429s of its models with their reset times, from which a
  shared limit is inferred.

A `LimiterStore` runs a function on the records of some keys atomically: `transact(keys, fn)`.
`MemoryStore` does it under one thread lock. A store shared by several servers (PostgreSQL) does
the same inside a transaction: `SELECT ... WHERE key = ANY(%s) ORDER BY key FOR UPDATE`, build the
records with `ScopeState.from_dict`, call `fn`, write back `to_dict()` of the records `fn` changed
(all of them is fine). The limiter's clock must then be one the servers share (wall time,
`time.time`), since the records hold clock times.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence, TypeVar

T = TypeVar("T")


def model_key(provider: str, model: str) -> str:
    return f"{provider}/{model}"


def provider_key(provider: str) -> str:
    return f"{provider}/*"


@dataclass
class ScopeState:
    tat: dict[str, float] = field(default_factory=dict)
    log: dict[str, list[list[float]]] = field(default_factory=dict)
    reported: dict[str, float] = field(default_factory=dict)
    learned: dict[str, float] = field(default_factory=dict)
    since: float | None = None
    sent: dict[str, float] = field(default_factory=dict)       # per metric, since `since`
    rejected: dict[str, float] = field(default_factory=dict)   # per metric: of those, refused with 429
    reset_at: float | None = None
    window_seconds: float | None = None
    learned_at: float | None = None
    probe_at: float | None = None
    probe_step: float = 0.0
    hits: int = 0
    basis: dict[str, float] = field(default_factory=dict)   # what the latest estimate was measured on
    sends: list[list[float]] = field(default_factory=list)  # [at, requests, tokens] carried, while a limit is learned
    logged_from: float | None = None                         # since when `sends` is kept
    recent: list[list[Any]] = field(default_factory=list)   # [model, reset_at, at] of the latest 429s

    def to_dict(self) -> dict[str, Any]:
        """A copy as plain data. Written out rather than `dataclasses.asdict`, whose `deepcopy` of
        every pair of the logs took most of a reserve's time."""
        data: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, dict):
                value = {k: [list(item) for item in v] if isinstance(v, list) else v for k, v in value.items()}
            elif isinstance(value, list):
                value = [list(item) for item in value]
            data[name] = value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ScopeState":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class LimiterStore(Protocol):
    def transact(self, keys: Sequence[str], fn: Callable[[dict[str, ScopeState]], T]) -> T:
        """Run `fn` on the records of `keys` (created empty when missing), atomically with respect
        to every other `transact` touching any of them, and keep what it changed."""

    def read(self) -> dict[str, ScopeState]:
        """A copy of every record (for reports)."""


class MemoryStore:
    """The records of one server, in memory, under one lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: dict[str, ScopeState] = {}

    def transact(self, keys: Sequence[str], fn: Callable[[dict[str, ScopeState]], T]) -> T:
        with self._lock:
            states = {key: self._states.setdefault(key, ScopeState()) for key in keys}
            return fn(states)

    def read(self) -> dict[str, ScopeState]:
        with self._lock:
            return {key: ScopeState.from_dict(state.to_dict()) for key, state in self._states.items()}
