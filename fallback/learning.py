"""Learning the limits a provider enforces but does not declare, from its 429s.

Pure functions on `ScopeState` records (fallback/limiter_state.py); the limiter calls them inside
a store transaction.

* **Estimate.** Each scope counts what it sent since the episode began (`since`) and how much of
  it was refused. A 429 whose wait hint says the window frees in `h` seconds means the provider
  accepted `sent - rejected` over about `now - since + h` seconds: that rate, times
  `learn_safety`, becomes the scope's limit per minute (requests, or tokens when the provider's
  message names tokens). Nothing is sent to the scope before the window frees. Further 429s for
  requests sent before the limit was learned are the same episode: they refine the estimate.
* **Scope.** 429s of two different models of one provider whose windows free at the same moment
  (within `scope_tolerance_seconds`) are one budget shared by the provider's models: the limit
  is learned on the provider's scope and the models' own learned limits from that episode go.
* **Probing.** After `probe_after` of a calm window the learned limit rises by `probe_first_step`,
  then every `probe_again_after` of a window by a step doubling each time up to `probe_max_step`
  (5 %, 10 %, 20 %, 40 %, 40 %...), until a 429 says where the limit is, or the configured ceiling
  is reached and the learned limit is dropped: a limit that doubles again is back within about
  1.5 windows. A 429 just after a raise, at a measured rate that says the level before it held,
  falls back to that level (the raise overshot) rather than below it.
* **Stragglers.** Requests still on their way when a limit is learned were counted as accepted;
  their 429s correct the estimate down, for a limit learned again as for a first one (no lower
  than a relearned limit may drop at once).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from config.providers import PacingConfig
from fallback.limiter_state import ScopeState

METRIC_WINDOW = {"requests": "rpm", "tokens": "tpm"}


@dataclass(frozen=True)
class Hit:
    """One 429: when, what it was sent with, and when the provider said the window frees."""

    now: float
    sent_at: float
    wait: float | None
    metric: str          # "requests" or "tokens"
    minute: float        # the scaled length of a minute window (seconds)


def count_sent(state: ScopeState, at: float, tokens: float, pacing: PacingConfig) -> None:
    """A request admitted to this scope at `at` carrying `tokens`."""
    if state.since is None:
        state.since = at
    state.sent["requests"] = state.sent.get("requests", 0.0) + 1
    state.sent["tokens"] = state.sent.get("tokens", 0.0) + tokens
    _bound_episode(state, at)


def uncount_tokens(state: ScopeState, delta: float) -> None:
    """The request carried `delta` tokens more (negative: fewer) than counted when it was sent."""
    if state.sent:
        state.sent["tokens"] = max(0.0, state.sent.get("tokens", 0.0) + delta)


def _bound_episode(state: ScopeState, now: float) -> None:
    """Keep the counts to a recent stretch: halve both when the episode grows past an hour."""
    if state.since is not None and now - state.since > 3600:
        state.since = now - (now - state.since) / 2
        state.sent = {k: v / 2 for k, v in state.sent.items()}
        state.rejected = {k: v / 2 for k, v in state.rejected.items()}


def is_straggler(state: ScopeState, hit: Hit) -> bool:
    """A 429 for a request sent before this scope learned its current limit."""
    return state.learned_at is not None and hit.sent_at <= state.learned_at


def note_rejected(state: ScopeState, hit: Hit, tokens: float) -> None:
    state.rejected["requests"] = state.rejected.get("requests", 0.0) + 1
    state.rejected["tokens"] = state.rejected.get("tokens", 0.0) + tokens
    state.hits += 1


def estimate(state: ScopeState, hit: Hit, in_force: float | None, pacing: PacingConfig) -> float | None:
    """The limit per (scaled) minute this scope's window really allows. First time: measured from
    the counts. With a learned limit already in force (we paced at it and it was too much): the
    measured rate, but never below `learn_decrease` of it (a long calm episode measures our own
    pace, not the provider's). None: nothing to go on (refused from the start, no ceiling)."""
    window = METRIC_WINDOW[hit.metric]
    accepted = state.sent.get(hit.metric, 0.0) - state.rejected.get(hit.metric, 0.0)
    span = _span(state, hit)
    measured = accepted / span * hit.minute * pacing.learn_safety if accepted > 0 and span > 0 else None
    learned = state.learned.get(window)
    if learned is not None:
        limit = min(max(measured or 0.0, learned * pacing.learn_decrease), learned * pacing.learn_safety)
        held = state.raised_from.get(window)
        if held is not None and measured is not None and measured >= held * pacing.learn_safety:
            # refused at a level a probe had just raised it to, at a rate that says the level
            # before the raise held: the raise overshot, the limit lies between the two
            limit = max(limit, min(held, learned * pacing.learn_safety))
    elif measured is not None:
        limit = min(measured, in_force * pacing.learn_safety) if in_force is not None else measured
    elif in_force is not None:
        limit = in_force / 2
    else:
        return None
    return max(1.0, limit)


def _span(state: ScopeState, hit: Hit) -> float:
    since = state.since if state.since is not None else hit.sent_at
    return max(0.0, hit.now - since) + (hit.wait or 0.0)


def learn(state: ScopeState, hit: Hit, limit: float | None, pacing: PacingConfig) -> None:
    """Set the scope's learned limit for the window `hit` names and hold the scope until the
    window frees; a new episode of counting begins then. `limit` None: nothing is learned."""
    if limit is None:
        return
    window = METRIC_WINDOW[hit.metric]
    reset = hit.now + (hit.wait or 0.0)
    first = window not in state.learned
    accepted = state.sent.get(hit.metric, 0.0) - state.rejected.get(hit.metric, 0.0)
    # Stragglers refine the measurement (see `refine`), down to `floor` at most.
    floor = 0.0
    if not first:   # as low as `estimate` could go: the decrease allowed, or the level an overshoot fell back to
        held = min(state.raised_from.get(window, math.inf), state.learned[window] * pacing.learn_safety)
        floor = min(limit, held if limit >= held else state.learned[window] * pacing.learn_decrease)
    state.basis = {"accepted": accepted, "span": _span(state, hit), "tokens": float(hit.metric == "tokens"),
                   "floor": floor}
    state.raised_from = {}
    state.learned[window] = limit
    state.learned_at = hit.now
    state.reset_at = reset
    if hit.wait and first:
        estimated = _span(state, hit)
        state.window_seconds = min(state.window_seconds or estimated, estimated)
    state.tat[window] = max(state.tat.get(window, reset), reset)
    state.probe_step = pacing.probe_first_step
    state.probe_at = reset + pacing.probe_after * (state.window_seconds or hit.minute)
    state.since = reset
    state.sent, state.rejected = {}, {}


def refine(state: ScopeState, hit: Hit, tokens: float, pacing: PacingConfig) -> None:
    """A straggler: one more request of the measured episode was refused after all (it was
    still on its way, counted as accepted, when the limit was learned): the measurement is
    corrected down. A limit lowered from one already in force goes no lower than that lowering
    allowed (`learn_decrease`, or the level before an overshooting probe)."""
    state.hits += 1
    basis = state.basis
    if not basis or bool(basis.get("tokens")) != (hit.metric == "tokens"):
        return
    basis["accepted"] -= tokens if hit.metric == "tokens" else 1.0
    if basis["accepted"] <= 0 or basis["span"] <= 0:
        return
    window = METRIC_WINDOW[hit.metric]
    measured = max(1.0, basis["accepted"] / basis["span"] * hit.minute * pacing.learn_safety, basis.get("floor", 0.0))
    state.learned[window] = min(state.learned.get(window, measured), measured)


def forget(state: ScopeState) -> None:
    state.learned, state.basis, state.raised_from = {}, {}, {}
    state.learned_at = state.reset_at = state.probe_at = state.window_seconds = None
    state.probe_step = 0.0


def probe(state: ScopeState, now: float, ceilings: dict[str, float | None], minute: float,
          pacing: PacingConfig) -> bool:
    """Raise the learned limits one step when a calm stretch has passed; True if anything changed.
    A limit that reaches its ceiling (the configured one) is dropped: the ceiling paces again."""
    if not state.learned or state.probe_at is None or now < state.probe_at:
        return False
    step = state.probe_step or pacing.probe_first_step
    state.raised_from = dict(state.learned)
    for window in list(state.learned):
        raised = state.learned[window] * (1 + step)
        ceiling = ceilings.get(window)
        if ceiling is not None and raised >= ceiling:
            del state.learned[window]
        else:
            state.learned[window] = raised
    state.probe_step = min(pacing.probe_max_step, step * 2)
    state.probe_at = now + pacing.probe_again_after * (state.window_seconds or minute)
    if not state.learned:
        forget(state)
    return True


def same_window(recent: list[list], model: str, reset: float, now: float, horizon: float,
                tolerance: float) -> list[str]:
    """Other models whose recent 429 frees its window when this one does."""
    return sorted({str(m) for m, other_reset, at in recent
                   if m != model and now - float(at) <= horizon and abs(float(other_reset) - reset) <= tolerance})


def remember(recent: list[list], model: str, reset: float, now: float, horizon: float) -> list[list]:
    kept = [entry for entry in recent if now - float(entry[2]) <= horizon]
    return (kept + [[model, reset, now]])[-16:]


def finite_wait(wait: float | None, pacing: PacingConfig) -> float | None:
    if wait is None or not math.isfinite(wait) or wait < 0 or wait > pacing.max_learn_hint_seconds:
        return None
    return wait
