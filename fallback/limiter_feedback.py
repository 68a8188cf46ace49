"""What a provider tells the rate limiter: the limits and remaining figures its headers report,
and its 429s, from which a limit is learned (fallback/learning.py). Part of `RateLimiter`
(fallback.limiter)."""
from __future__ import annotations

import re
from typing import Callable, Iterable

from fallback import learning
from fallback.limiter_state import ScopeState, model_key, provider_key
from fallback.windows import NAME_OF, Reservation
from providers.headers import WindowReading

_TOKENS_MESSAGE = re.compile(r"token|\bTPM\b", re.IGNORECASE)


class ProviderFeedback:
    """Part of `RateLimiter` (it uses the limiter's `_clock`, `_store`, `pacing`, `minute`, `_models`,
    the window arithmetic and the limits in force)."""

    def observe(self, provider: str, model: str, readings: Iterable[WindowReading], need: float = 0.0) -> None:
        """Correct the model's windows with what the provider reported: a reported limit replaces
        the configured one; a window the provider says has less left than one request (1, or
        `need` tokens) while our own books say it fits (someone else uses the key) is held until
        the reported reset. When our books already hold it, their own, exact, wait stands: the
        reset a provider reports is when the window is whole again, later than the next room."""
        correct = self._correcting(provider, model, list(readings), need)
        if correct is not None:
            self._store.transact([model_key(provider, model)], correct)

    def _correcting(self, provider: str, model: str, readings: list[WindowReading],
                    need: float) -> Callable[[dict[str, ScopeState]], None] | None:
        if not readings:
            return None
        now = self._clock()
        key = model_key(provider, model)

        def correct(states: dict[str, ScopeState]) -> None:
            state = states[key]
            for reading in readings:
                name = NAME_OF.get((reading.metric, reading.period))
                if name is None:
                    continue
                if reading.limit is not None and reading.limit > 0:
                    state.reported[name] = float(reading.limit)
                if reading.remaining is None:
                    continue
                enough = 1.0 if reading.metric == "requests" else max(1.0, need)
                limit = self._model_ceiling(key, state).get(name) or float(reading.limit or 0) or 1.0
                if self._logged(name):
                    fits = limit - sum(a for _, a in self._log(state, name, limit, now)) >= enough
                else:
                    fits = enough <= limit and self._wait(state, name, limit, enough, now) <= 0
                if reading.remaining < enough and fits:
                    span = self.span(name)
                    reset = reading.reset_seconds if reading.reset_seconds is not None else span
                    hold = now + min(reset, span)
                    if not self._steady(name):   # a bucket admits while the backlog fits the span
                        hold += limit * self._unit(name, limit) - self._unit(name, limit)
                    state.tat[name] = max(state.tat.get(name, now), hold)

        return correct

    def rate_limited(self, reservation: Reservation, wait: float | None, message: str = "") -> None:
        """A 429 for this reservation's request, the provider asking to wait `wait` seconds: learn
        the limit of the window it hit (fallback/learning.py)."""
        provider, model = reservation.provider, reservation.model
        now = self._clock()
        hit = learning.Hit(now, reservation.at, learning.finite_wait(wait, self.pacing),
                           "tokens" if _TOKENS_MESSAGE.search(message or "") else "requests", self.minute)
        pk, mk = provider_key(provider), model_key(provider, model)
        keys = sorted({pk, mk, *(model_key(provider, m) for m in self._models.get(provider, []))})
        self._store.transact(keys, lambda states: self._learn(provider, model, hit, reservation.tokens, states))

    def _learn(self, provider: str, model: str, hit: learning.Hit, tokens: float,
               states: dict[str, ScopeState]) -> None:
        pk, mk = provider_key(provider), model_key(provider, model)
        shared, own = states[pk], states[mk]
        if learning.is_straggler(shared, hit):
            learning.refine(shared, hit, tokens, self.pacing)
            return
        if learning.is_straggler(own, hit):
            learning.refine(own, hit, tokens, self.pacing)
            return
        learning.note_rejected(own, hit, tokens)
        learning.note_rejected(shared, hit, tokens)
        if not self.pacing.learn_limits:
            return
        window = learning.METRIC_WINDOW[hit.metric]
        reset = hit.now + (hit.wait or 0.0)
        others = learning.same_window(shared.recent, model, reset, hit.now, self.minute,
                                      self.pacing.scope_tolerance_seconds)
        shared.recent = learning.remember(shared.recent, model, reset, hit.now, self.minute)
        if others or shared.learned:
            for other in [model, *others]:
                learning.forget(states[model_key(provider, other)])
            in_force = shared.learned.get(window, self._provider_ceiling(provider, states).get(window))
            learning.learn(shared, hit, learning.estimate(shared, hit, in_force, self.pacing), self.pacing)
        else:
            learning.learn(own, hit, learning.estimate(own, hit, self._in_force(mk, own, window), self.pacing),
                           self.pacing)

    def _in_force(self, key: str, state: ScopeState, window: str) -> float | None:
        ceiling = self._model_ceiling(key, state).get(window)
        learned = state.learned.get(window)
        if ceiling is None or learned is None:
            return learned if ceiling is None else ceiling
        return min(ceiling, learned)

    def _probe(self, provider: str, model: str, states: dict[str, ScopeState], now: float) -> None:
        mk, pk = model_key(provider, model), provider_key(provider)
        learning.probe(states[pk], now, self._provider_ceiling(provider), self.minute, self.pacing)
        ceilings: dict[str, float | None] = dict(self._model_ceiling(mk, states[mk]))
        learning.probe(states[mk], now, ceilings, self.minute, self.pacing)
