"""Proactive rate limiting per (provider, model), shared by all threads (and, through a shared
`LimiterStore`, by several servers).

**Pacing (GCRA).** Each limit (requests or tokens per minute, hour, day) is a generic cell rate
algorithm window: one number, the theoretical arrival time `tat`, the clock time by which what was
admitted has drained at `limit / span`. A request costs 1 in request windows and its estimated
tokens (prompt + completion budget) in token windows, each unit worth `(span + grace) / limit`
seconds (grace: 1 % of the span, at most 1 s, plus `pacing.jitter_seconds` for the network). Windows up to `pacing.steady_max_window_seconds` (a minute) are paced evenly: a request
is admitted when `tat <= now`, so requests are spread over the window instead of spending it in
a burst, and no stretch of `span` seconds holds more than the limit. Token windows paced evenly also
keep a log of what they admitted, which bounds every stretch of the window exactly; there a request
admitted late (a thread woken a moment after its slot) is spaced from its slot, not from its
arrival, by at most its own spacing, so the lateness of busy threads does not add up to idle
window time. Longer windows (hour, day)
are token buckets: a request is admitted while the backlog `tat - now` stays within the span, so
an hour's budget can be spent at the minute windows' pace. Window totals are unchanged. When a
call ends, its reservation settles to the tokens really charged (`tat` moves back by the
difference).

**Corrections.** A limit the provider's headers report replaces the configured one; a reported
remaining figure too small for another request holds the window until the reported reset.
A 429 without a declared limit teaches a lower limit, for the model or for the whole provider
(fallback/learning.py); configured limits stay the ceiling, learned ones only lower it, and are
probed upward until the ceiling is reached again.

**State.** Everything mutable is in small `ScopeState` records, one per scope key (`provider/model`,
`provider/*`), reached only through `LimiterStore.transact(keys, fn)` (fallback/limiter_state.py):
`MemoryStore` runs `fn` under a thread lock; a PostgreSQL store runs it on rows locked with
`SELECT ... FOR UPDATE`, so several servers share one budget. Configured limits are not state:
every server reads the same configuration.

What a provider reports and its 429s are read in fallback/limiter_feedback.py, the reports on the
windows made in fallback/limiter_reports.py (both parts of `RateLimiter`).

Written here rather than with `limits`: that library cannot settle a reservation to a different
cost afterwards, absorb a provider's readings, or learn limits from 429s.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

from config.providers import Limits, PacingConfig
from fallback import learning
from fallback.limiter_feedback import ProviderFeedback
from fallback.limiter_reports import LimiterReports
from fallback.limiter_state import LimiterStore, MemoryStore, ScopeState, model_key, provider_key
from fallback.windows import WINDOW_NAMES, Reservation, Wait
from providers.headers import PERIOD_SECONDS, WindowReading

# A token window's log keeps at most this many entries (each reserve and settle reads and writes
# the whole record, in PostgreSQL mode through the database): past it, the oldest two merge.
LOG_ENTRIES = 48


@dataclass(frozen=True)
class _Gate:
    key: str
    name: str
    limit: float


class RateLimiter(ProviderFeedback, LimiterReports):
    def __init__(self, limits: Mapping[tuple[str, str], Limits], clock: Callable[[], float] = time.monotonic,
                 pacing: PacingConfig | None = None, store: LimiterStore | None = None):
        self._clock = clock
        self.pacing = pacing or PacingConfig()
        self._store: LimiterStore = store or MemoryStore()
        self._configured: dict[str, dict[str, float]] = {}
        self._models: dict[str, list[str]] = {}
        self._steady_seen: dict[str, dict[str, float]] = {}   # per model key: steady windows in force, last reserve
        for (provider, model), configured in limits.items():
            self._configured[model_key(provider, model)] = {
                name: float(value) for name, value in configured.model_dump().items() if value is not None}
            self._models.setdefault(provider, []).append(model)

    # -- window arithmetic -----------------------------------------------------------------

    def span(self, name: str) -> float:
        return PERIOD_SECONDS[WINDOW_NAMES[name][1]] * self.pacing.time_scale

    @property
    def minute(self) -> float:
        return self.span("rpm")

    def _unit(self, name: str, limit: float) -> float:
        span = self.span(name)
        return (span + min(1.0, 0.01 * span) + self.pacing.jitter_seconds) / limit

    def _steady(self, name: str) -> bool:
        return self.span(name) <= self.pacing.steady_max_window_seconds * self.pacing.time_scale

    def _logged(self, name: str) -> bool:
        """Token windows paced evenly also keep a log: a request's tokens come in one lump, so the
        rate alone could put one request too many in some stretch of the window."""
        return WINDOW_NAMES[name][0] == "tokens" and self._steady(name)

    def _log(self, state: ScopeState, name: str, limit: float, now: float) -> list[list[float]]:
        entries = state.log.setdefault(name, [])
        expiry = limit * self._unit(name, limit)
        while entries and entries[0][0] + expiry <= now:
            entries.pop(0)
        return entries

    def _log_wait(self, state: ScopeState, name: str, limit: float, cost: float, now: float) -> float:
        entries = self._log(state, name, limit, now)
        excess = sum(amount for _, amount in entries) + cost - limit
        if excess <= 0:
            return 0.0
        freed = 0.0
        expiry = limit * self._unit(name, limit)
        for at, amount in entries:
            freed += amount
            if freed >= excess:
                return max(0.0, at + expiry - now)
        return expiry

    def _wait(self, state: ScopeState, name: str, limit: float, cost: float, now: float) -> float:
        if cost > limit:
            return math.inf
        tat = state.tat.get(name, now)
        if self._steady(name):
            paced = max(0.0, tat - now)
            return max(paced, self._log_wait(state, name, limit, cost, now)) if self._logged(name) else paced
        unit = self._unit(name, limit)
        return max(0.0, max(tat, now) + cost * unit - now - limit * unit)

    # -- limits in force -------------------------------------------------------------------

    def _model_ceiling(self, key: str, state: ScopeState) -> dict[str, float]:
        return {**self._configured.get(key, {}), **state.reported}

    def _provider_ceiling(self, provider: str, states: Mapping[str, ScopeState] | None = None) -> dict[str, float | None]:
        """Per window, the sum of the provider's models' limits (None when one is unlimited)."""
        out: dict[str, float | None] = {}
        for name in WINDOW_NAMES:
            total = 0.0
            for model in self._models.get(provider, []):
                key = model_key(provider, model)
                reported = states[key].reported if states and key in states else {}
                value = reported.get(name, self._configured.get(key, {}).get(name))
                if value is None:
                    total = math.nan
                    break
                total += value
            out[name] = None if math.isnan(total) or not self._models.get(provider) else total
        return out

    def _gates(self, provider: str, model: str, states: Mapping[str, ScopeState]) -> list[_Gate]:
        mk, pk = model_key(provider, model), provider_key(provider)
        own = states[mk]
        limits = self._model_ceiling(mk, own)
        for name, learned in own.learned.items():
            limits[name] = min(learned, limits.get(name, learned))
        gates = [_Gate(mk, name, limit) for name, limit in limits.items() if limit > 0]
        gates += [_Gate(pk, name, limit) for name, limit in states[pk].learned.items() if limit > 0]
        return gates

    def steady_limits(self, provider: str, model: str) -> dict[str, float]:
        """The model's own windows paced evenly (`rpm`, `tpm`) and their limits in force as this
        server last saw them (configured, or as reported or learned since), e.g. `{"rpm": 30, "tpm":
        60000}`; read without the store, for sizing a request before it is reserved."""
        key = model_key(provider, model)
        seen = self._steady_seen.get(key)
        if seen is None:
            seen = {name: limit for name, limit in self._configured.get(key, {}).items() if self._steady(name)}
        return dict(seen)

    def _keys(self, provider: str, model: str) -> list[str]:
        return sorted({model_key(provider, model), provider_key(provider)})

    # -- reserving -------------------------------------------------------------------------

    def reserve(self, provider: str, model: str, tokens: int) -> Reservation | Wait:
        """A reservation, or the seconds to wait before this request fits (inf: it never will),
        as a `Wait` naming the windows that hold it back."""
        def admit(states: dict[str, ScopeState]) -> Reservation | Wait:
            # the clock is read once the records are held: with a shared store the rows may have
            # been locked by another server a moment ago, and an earlier reading would see its
            # reservation "in the future" and wait for nothing
            now = self._clock()
            self._probe(provider, model, states, now)
            gates = self._gates(provider, model, states)
            self._steady_seen[model_key(provider, model)] = {
                gate.name: gate.limit for gate in gates
                if gate.key == model_key(provider, model) and self._steady(gate.name)}
            wait = self._longest(gates, states, tokens, now)
            if wait > 0:
                return wait
            reservation = Reservation(provider, model, tokens, now)
            for gate in gates:
                state = states[gate.key]
                tokens_window = WINDOW_NAMES[gate.name][0] == "tokens"
                unit = self._unit(gate.name, gate.limit)
                spacing = (tokens if tokens_window else 1) * unit
                # A logged window forgives lateness up to this request's own spacing (a thread woken
                # a moment after its slot loses nothing); its log still bounds every stretch exactly.
                late = spacing if self._logged(gate.name) else 0.0
                state.tat[gate.name] = max(state.tat.get(gate.name, now), now - late) + spacing
                if tokens_window:
                    reservation.charges.append((gate.key, gate.name, unit))
                if self._logged(gate.name):
                    entries = self._log(state, gate.name, gate.limit, now)
                    entries.append([now, float(tokens)])
                    if len(entries) > LOG_ENTRIES:   # the two oldest as one, freed with the later: never less held
                        entries[0:2] = [[entries[1][0], entries[0][1] + entries[1][1]]]
            for key in self._keys(provider, model):
                learning.count_sent(states[key], now, tokens)
            return reservation

        return self._store.transact(self._keys(provider, model), admit)

    def wait_time(self, provider: str, model: str, tokens: int) -> Wait:
        """What `reserve` would answer for `tokens`, without reserving: 0 when it fits now."""
        now = self._clock()
        return self._store.transact(self._keys(provider, model), lambda states: self._longest(
            self._gates(provider, model, states), states, tokens, now))

    def _longest(self, gates: list[_Gate], states: Mapping[str, ScopeState], tokens: int, now: float) -> Wait:
        waits: dict[str, float] = {}
        for gate in gates:
            cost = tokens if WINDOW_NAMES[gate.name][0] == "tokens" else 1
            wait = self._wait(states[gate.key], gate.name, gate.limit, cost, now)
            waits[gate.name] = max(waits.get(gate.name, 0.0), wait)
        longest = max(waits.values(), default=0.0)
        if longest <= 1e-9:   # float residue of the arithmetic: due now
            return Wait(0.0)
        holding = sorted((name for name, wait in waits.items() if wait > 0), key=lambda n: -waits[n])
        return Wait(longest, tuple(holding))   # the window that holds it longest first

    def settle(self, reservation: Reservation, used_tokens: int | None,
               readings: Iterable[WindowReading] = ()) -> None:
        """Replace the estimate with the real token count (None keeps the estimate) and correct the
        model's windows with what the provider reported (`observe`), in one transaction: after
        every call both are due, and in PostgreSQL mode each transaction is a round of the rows."""
        readings = list(readings)
        adjust = None if reservation.settled else self._settling(reservation, used_tokens)
        reservation.settled = True
        correct = self._correcting(reservation.provider, reservation.model, readings, reservation.tokens)
        if adjust is None and correct is None:
            return

        def both(states: dict[str, ScopeState]) -> None:
            if adjust is not None:
                adjust(states)
            if correct is not None:
                correct(states)
        self._store.transact(self._keys(reservation.provider, reservation.model), both)

    def _settling(self, reservation: Reservation, used_tokens: int | None) -> Callable[[dict[str, ScopeState]], None] | None:
        if used_tokens is None:
            return None
        delta = float(max(0, used_tokens)) - reservation.tokens

        def adjust(states: dict[str, ScopeState]) -> None:
            for key, name, unit in reservation.charges:
                if name in states[key].tat:
                    states[key].tat[name] += delta * unit
                for entry in states[key].log.get(name, []):
                    if entry[0] == reservation.at and entry[1] == reservation.tokens:
                        entry[1] = float(max(0, used_tokens))
                        break
            for state in states.values():
                learning.uncount_tokens(state, delta)
        return adjust
