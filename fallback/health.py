"""Which providers and models may be tried now: cooldowns, disabled keys, failures in a row.

Shared by all threads. Nothing is excluded forever: a cooldown ends at its time (a new cooldown
never shortens an existing one), and a provider disabled for a rejected key comes back as soon as
its key or base URL changes. A model that has not answered successfully yet (or not since it was
switched off) takes one request at a time until one succeeds, like a circuit breaker's half-open
state, so concurrent work never piles onto a model that turns out to be failing.

In PostgreSQL mode (`share(table)`) cooldowns and disabled keys are also written to the database
(`storage.shared_health`) and those of the other servers are read back, at most every
`refresh_seconds` (0.25 s): a model one server saw fail is skipped by every server. This board's
own entries take effect at once; the database only adds to them, and if it cannot be reached the
board goes on with what it knows (logged once). Half-open probes are shared too
(`share(..., probes=)`, `storage.shared_probes`): while a pair is unproven, one request at a time
goes to it system-wide, claimed by one conditional upsert and released in `finally` as here; a
claim runs out by itself (`SharedProbes.seconds`), so a server that dies holding one blocks the pair only
until then. Which pairs are proven, and failures in a row, stay per server.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from errors import Failure, Scope
from storage.outage import Outage
from storage.shared_health import SharedHealthTable
from storage.shared_probes import SharedProbes

log = logging.getLogger("fallback")


PROVEN, OWNED, BUSY = "proven", "owned", "busy"   # what `claim_probe` answers


@dataclass
class _Cooldown:
    until: float = 0.0          # monotonic seconds
    category: str | None = None
    reason: str | None = None
    message: str | None = None
    switched: bool = False      # a real switch-off, not a short retry backoff


@dataclass
class _Disabled:
    fingerprint: str
    category: str
    message: str
    since: float


@dataclass(frozen=True)
class Blocked:
    """Why a target cannot be tried now."""

    until: float | None         # monotonic; None when disabled until the configuration changes
    category: str | None
    reason: str | None
    message: str | None
    scope: str

    @property
    def permanent(self) -> bool:
        """Waiting will not bring it back within a run: a rejected key or a model that is gone."""
        return self.until is None or self.reason == "model_gone"


@dataclass(frozen=True)
class _RemoteView:
    """What the other servers recorded, as of `fetched` (this board's clock)."""

    fetched: float = float("-inf")
    providers: dict[str, _Cooldown] | None = None
    models: dict[tuple[str, str], _Cooldown] | None = None
    disabled: dict[str, _Disabled] | None = None


class HealthBoard:
    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._shared: SharedHealthTable | None = None
        self._refresh = 0.25
        self._remote = _RemoteView()
        self._fetch_lock = threading.Lock()
        self._outage = Outage(log, "the shared engine state")
        self._probes: SharedProbes | None = None
        self._shared_claims: dict[tuple[str, str], str] = {}   # probes this board holds in the database: owner
        self._provider_cooling: dict[str, _Cooldown] = {}
        self._model_cooling: dict[tuple[str, str], _Cooldown] = {}
        self._disabled: dict[str, _Disabled] = {}
        self._in_a_row: dict[tuple[str, str], int] = {}
        self._proven: set[tuple[str, str]] = set()    # answered successfully since last switched off
        self._probing: set[tuple[str, str]] = set()   # an unproven pair with its one request in flight

    # -- shared with other servers (PostgreSQL mode) ----------------------------------------

    def share(self, table: SharedHealthTable, refresh_seconds: float = 0.25, probes: SharedProbes | None = None) -> None:
        """Write cooldowns and disabled keys to `table` and read the other servers' back; with
        `probes`, claim half-open probes there, one system-wide per unproven pair."""
        self._shared, self._refresh, self._probes = table, refresh_seconds, probes

    def _remote_view(self, now: float) -> _RemoteView:
        """The other servers' entries, fetched again when older than `refresh_seconds`."""
        view = self._remote
        if self._shared is None or now - view.fetched < self._refresh:
            return view
        with self._fetch_lock:
            view = self._remote
            if now - view.fetched < self._refresh:   # another thread fetched meanwhile
                return view
            try:
                cooldowns, disabled = self._shared.active()
            except Exception as exc:  # noqa: BLE001 - go on with what this board knows; say so once
                self._outage.failed(exc, "reading the other servers' cooldowns")
                view = self._remote = _RemoteView(now, view.providers, view.models, view.disabled)
                return view
            self._outage.worked()
            fetched = self._clock()
            providers: dict[str, _Cooldown] = {}
            models: dict[tuple[str, str], _Cooldown] = {}
            for row in cooldowns:
                entry = _Cooldown(fetched + row.seconds_left, row.category, row.reason, row.message, row.switched)
                if row.model is None:
                    providers[row.provider] = entry
                else:
                    models[(row.provider, row.model)] = entry
            view = self._remote = _RemoteView(
                now, providers, models,
                {row.provider: _Disabled(row.fingerprint, row.category or "", row.message or "", fetched)
                 for row in disabled})
            return view

    def _write_shared(self, what: str, write: Callable[[SharedHealthTable], None]) -> None:
        if self._shared is None:
            return
        try:
            write(self._shared)
        except Exception as exc:  # noqa: BLE001 - this board has it; the others will not see it
            self._outage.failed(exc, f"writing a {what}")
        else:
            self._outage.worked()

    # -- queries ---------------------------------------------------------------------------

    def blocked(self, provider: str, model: str | None, fingerprint: str) -> Blocked | None:
        """None when the pair (or, with `model` None, the provider) may be tried now."""
        now = self._clock()
        remote = self._remote_view(now)
        with self._lock:
            for disabled in (self._disabled.get(provider), (remote.disabled or {}).get(provider)):
                if disabled and disabled.fingerprint == fingerprint:
                    return Blocked(None, disabled.category, "disabled", disabled.message, Scope.PROVIDER.value)
            worst: tuple[_Cooldown, str] | None = None
            for cooldown, scope in ((self._provider_cooling.get(provider), Scope.PROVIDER.value),
                                    (self._model_cooling.get((provider, model or "")), Scope.MODEL.value),
                                    ((remote.providers or {}).get(provider), Scope.PROVIDER.value),
                                    ((remote.models or {}).get((provider, model or "")), Scope.MODEL.value)):
                if cooldown and cooldown.until > now and (worst is None or cooldown.until > worst[0].until):
                    worst = (cooldown, scope)
            if worst is None:
                return None
            cooldown, scope = worst
            return Blocked(cooldown.until, cooldown.category, cooldown.reason, cooldown.message, scope)

    def in_a_row(self, provider: str, model: str) -> int:
        with self._lock:
            return self._in_a_row.get((provider, model), 0)

    def claim_probe(self, provider: str, model: str) -> str:
        """"proven": send freely; "owned": the caller holds the pair's one half-open probe and must
        `end_probe` afterwards; "busy": an unproven pair already has its request in flight."""
        key = (provider, model)
        with self._lock:
            if key in self._proven:
                return PROVEN
            if key in self._probing:
                return BUSY
            self._probing.add(key)
        if self._probes is None:
            return OWNED
        try:
            owner = self._probes.claim(provider, model)
        except Exception as exc:  # noqa: BLE001 - the database is away: this server's own claim stands
            self._outage.failed(exc, "claiming a half-open probe")
            return OWNED
        self._outage.worked()
        with self._lock:
            if owner is None:   # another server's probe is out
                self._probing.discard(key)
                return BUSY
            self._shared_claims[key] = owner
        return OWNED

    def try_probe(self, provider: str, model: str) -> bool:
        """False while an unproven pair already has its one request in flight; otherwise the
        caller may send (and, for an unproven pair, must `end_probe` afterwards)."""
        return self.claim_probe(provider, model) != BUSY

    def end_probe(self, provider: str, model: str) -> None:
        key = (provider, model)
        with self._lock:
            self._probing.discard(key)
            owner = self._shared_claims.pop(key, None)
        if owner is not None and self._probes is not None:
            try:
                self._probes.release(provider, model, owner)
            except Exception as exc:  # noqa: BLE001 - the claim runs out by itself
                self._outage.failed(exc, "releasing a half-open probe")

    # -- updates ---------------------------------------------------------------------------

    def record_success(self, provider: str, model: str) -> None:
        with self._lock:
            self._in_a_row.pop((provider, model), None)
            self._proven.add((provider, model))

    def count_failure(self, provider: str, model: str) -> int:
        """One more failure in a row for this model; returns the new count."""
        with self._lock:
            count = self._in_a_row.get((provider, model), 0) + 1
            self._in_a_row[(provider, model)] = count
            return count

    def cool(self, provider: str, model: str | None, seconds: float, failure: Failure,
             switched: bool) -> float:
        """Cool a model (or, with model None, a provider) down; never shortens a cooldown.
        Returns the monotonic time it ends."""
        now = self._clock()
        with self._lock:
            table: dict[Any, _Cooldown] = self._provider_cooling if model is None else self._model_cooling
            key = provider if model is None else (provider, model)
            current = table.get(key)
            until = now + max(0.0, seconds)
            if current is None or current.until <= now or until > current.until:
                table[key] = _Cooldown(until, failure.category.value, failure.reason or
                                       ("backoff" if not switched else None), failure.message, switched)
            if switched:
                if model is not None:
                    self._in_a_row.pop(key, None)
                self._proven = {p for p in self._proven if p[0] != provider or (model is not None and p[1] != model)}
            entry = table[key]
        if entry.until == until:   # this cooldown is the longest: the other servers skip the model too
            self._write_shared("cooldown", lambda shared: shared.cool(
                provider, model, until - now, entry.category, entry.reason, entry.message, switched))
        return entry.until

    def disable(self, provider: str, fingerprint: str, failure: Failure) -> None:
        with self._lock:
            self._disabled[provider] = _Disabled(fingerprint, failure.category.value, failure.message, self._clock())
            self._proven = {p for p in self._proven if p[0] != provider}
        self._write_shared("disabled key", lambda shared: shared.disable(
            provider, fingerprint, failure.category.value, failure.message))

    # -- reporting -------------------------------------------------------------------------

    def state(self, provider: str, model: str | None, fingerprint: str,
              to_wall: Callable[[float], float]) -> dict[str, Any]:
        """{state: ok | cooling | disabled, until, category, reason, message, scope, failures_in_a_row}."""
        now = self._clock()
        with self._lock:
            in_a_row = self._in_a_row.get((provider, model), 0) if model else 0
        blocked = self.blocked(provider, model, fingerprint)
        if blocked is None:
            return {"state": "ok", "failures_in_a_row": in_a_row}
        report = {"state": "disabled" if blocked.until is None else "cooling",
                  "category": blocked.category, "reason": blocked.reason, "message": blocked.message,
                  "scope": blocked.scope, "failures_in_a_row": in_a_row}
        if blocked.until is not None:
            report["until"] = datetime.fromtimestamp(to_wall(blocked.until), timezone.utc).isoformat()
            report["seconds_left"] = round(blocked.until - now, 3)
        return report
