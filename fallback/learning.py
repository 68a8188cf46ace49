"""Learning the limits a provider enforces but does not declare, from its 429s.

Pure functions on `ScopeState` records (fallback/limiter_state.py); the limiter calls them inside
a store transaction.

* **Estimate.** Each scope counts what it sent since the episode began (`since`) and how much of
  it was refused. A 429 whose wait hint says the window frees in `h` seconds means the provider
  accepted `sent - rejected` over about `sent_at - since + h` seconds (`_span`): that rate, times
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
  1.5 windows. Such quick steps outrun the 429s (a raise shows as a 429 only once a window holds
  more than the limit), so the level before the latest one may be too much already.
* **Evidence.** So while a limit is learned the scope keeps a log of what it sent (`sends`), and a
  429 then learns the limit from what the window before the refused request really carried: the
  provider refused because that window was full (`evidence`). A wait hint says how much of it
  must leave before one more fits: less than we carried means someone else took a share. The
  scope then waits until its next requests at the new pace all find room (`_room`): a probe that
  overshot sent its window's end faster than that.
* **Window.** Its length is estimated from the first episode: from the first request's sending
  to the refused one's, plus the wait hint (the provider times both from arrival: their way
  there cancels).
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
SENDS_KEPT = 64      # a scope with a learned limit keeps its last two windows' sends, at most this many


@dataclass(frozen=True)
class Hit:
    """One 429: when, what it was sent with, and when the provider said the window frees."""

    now: float
    sent_at: float
    wait: float | None
    metric: str          # "requests" or "tokens"
    minute: float        # the scaled length of a minute window (seconds)


def count_sent(state: ScopeState, at: float, tokens: float) -> None:
    """A request admitted to this scope at `at` carrying `tokens`."""
    if state.since is None:
        state.since = at
    state.sent["requests"] = state.sent.get("requests", 0.0) + 1
    state.sent["tokens"] = state.sent.get("tokens", 0.0) + tokens
    _bound_episode(state, at)
    if state.learned:   # what a window carried, for the next 429 (`evidence`)
        horizon = at - 2 * (state.window_seconds or math.inf)
        state.sends = [entry for entry in state.sends if entry[0] > horizon] + [[at, 1.0, float(tokens)]]
        if len(state.sends) > SENDS_KEPT:   # the two oldest as one, at the earlier's time: never more counted
            state.sends[0:2] = [[state.sends[0][0], state.sends[0][1] + state.sends[1][1],
                                 state.sends[0][2] + state.sends[1][2]]]


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


def _unsend(state: ScopeState, hit: Hit) -> None:
    """The request refused by `hit` was not carried: it leaves the log of sends."""
    for entry in state.sends:
        if entry[0] == hit.sent_at and entry[1] > 0:
            entry[1], entry[2] = 0.0, 0.0
            return


def note_rejected(state: ScopeState, hit: Hit, tokens: float) -> None:
    _unsend(state, hit)
    state.rejected["requests"] = state.rejected.get("requests", 0.0) + 1
    state.rejected["tokens"] = state.rejected.get("tokens", 0.0) + tokens
    state.hits += 1


def estimate(state: ScopeState, hit: Hit, in_force: float | None, pacing: PacingConfig) -> float | None:
    """The limit per (scaled) minute this scope's window really allows. First time: measured from
    the counts. With a learned limit already in force (we paced at it and it was too much): what
    the window carried (`evidence`) once the log reaches a window back, else the measured rate,
    but never below `learn_decrease` of it (a long calm episode measures our own pace, not the
    provider's). None: nothing to go on (refused from the start, no ceiling)."""
    window = METRIC_WINDOW[hit.metric]
    accepted = state.sent.get(hit.metric, 0.0) - state.rejected.get(hit.metric, 0.0)
    span = _span(state, hit)
    measured = accepted / span * hit.minute * pacing.learn_safety if accepted > 0 and span > 0 else None
    learned = state.learned.get(window)
    carried = evidence(state, hit, pacing)
    if learned is not None and carried is not None:
        # paced at a learned limit and it was too much: what the window really carried
        limit = min(carried[0] / carried[1] * hit.minute * pacing.learn_safety, learned * pacing.learn_safety)
    elif learned is not None:
        limit = min(max(measured or 0.0, learned * pacing.learn_decrease), learned * pacing.learn_safety)
    elif measured is not None:
        limit = min(measured, in_force * pacing.learn_safety) if in_force is not None else measured
    elif in_force is not None:
        limit = in_force / 2
    else:
        return None
    return max(1.0, limit)


def _span(state: ScopeState, hit: Hit) -> float:
    """The stretch the episode's requests were accepted over: from its first request to when the
    window frees. With a wait hint, from the refused request's sending: the provider timed the
    hint from its arrival, as it counted the first one's, so their transit cancels (timed from
    our receiving the 429, the span would also hold the way back, and the provider's latency)."""
    since = state.since if state.since is not None else hit.sent_at
    if hit.wait is None:
        return max(0.0, hit.now - since)
    return max(0.0, hit.sent_at - since) + hit.wait


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
    carried = None if first else evidence(state, hit, pacing)
    if carried is not None:   # measured on the window before the refused request: later ones are not in it
        state.basis = {"accepted": carried[0], "span": carried[1],
                       "tokens": float(hit.metric == "tokens"), "floor": 0.0, "until": hit.sent_at}
    else:
        if not first:   # as low as `estimate` could go: the decrease allowed
            floor = min(limit, state.learned[window] * pacing.learn_decrease)
        state.basis = {"accepted": accepted, "span": _span(state, hit), "tokens": float(hit.metric == "tokens"),
                       "floor": floor}
    if not state.learned:
        state.logged_from = hit.now
    state.learned[window] = limit
    state.learned_at = hit.now
    state.reset_at = reset
    if hit.wait and first:
        estimated = _span(state, hit)
        state.window_seconds = min(state.window_seconds or estimated, estimated)
    state.tat[window] = max(state.tat.get(window, reset), reset)
    if carried is not None and hit.metric == "requests":   # and until the window's requests drained
        state.tat[window] = max(state.tat[window], _room(state, carried, limit, hit, reset))
    state.probe_step = pacing.probe_first_step
    state.probe_at = reset + pacing.probe_after * (state.window_seconds or hit.minute)
    state.since = reset
    state.sent, state.rejected = {}, {}


def refine(state: ScopeState, hit: Hit, tokens: float, pacing: PacingConfig) -> None:
    """A straggler: one more request of the measured episode was refused after all (it was
    still on its way, counted as accepted, when the limit was learned): the measurement is
    corrected down (a window's evidence only by those sent before the refused request). A limit
    lowered from one already in force goes no lower than `learn_decrease` allowed."""
    state.hits += 1
    _unsend(state, hit)
    basis = state.basis
    if not basis or bool(basis.get("tokens")) != (hit.metric == "tokens"):
        return
    if hit.sent_at >= basis.get("until", math.inf):
        return   # sent after the refused request: not in the window the limit was measured on
    basis["accepted"] -= tokens if hit.metric == "tokens" else 1.0
    if basis["accepted"] <= 0 or basis["span"] <= 0:
        return
    window = METRIC_WINDOW[hit.metric]
    measured = max(1.0, basis["accepted"] / basis["span"] * hit.minute * pacing.learn_safety, basis.get("floor", 0.0))
    state.learned[window] = min(state.learned.get(window, measured), measured)


def forget(state: ScopeState) -> None:
    state.learned, state.basis, state.sends = {}, {}, []
    state.learned_at = state.reset_at = state.probe_at = state.window_seconds = state.logged_from = None
    state.probe_step = 0.0


def probe(state: ScopeState, now: float, ceilings: dict[str, float | None], minute: float,
          pacing: PacingConfig) -> bool:
    """Raise the learned limits one step when a calm stretch has passed; True if anything changed.
    A limit that reaches its ceiling (the configured one) is dropped: the ceiling paces again."""
    if not state.learned or state.probe_at is None or now < state.probe_at:
        return False
    step = state.probe_step or pacing.probe_first_step
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


def evidence(state: ScopeState, hit: Hit, pacing: PacingConfig) -> tuple[float, float] | None:
    """What the provider's window held when it refused `hit`'s request, from the scope's log of
    sends: (requests or tokens, over the window's seconds). The provider refused because the
    window before the refused request was full: what the scope carried in it is the limit (for a
    probe that overshot, exactly), unless someone else took a share meanwhile. A wait hint says
    that: the requests that must leave the window before there is room again (those sent up to
    the hint's moment a window back, `jitter_seconds` allowed for the way to the provider) leave
    room for one more, so the window holds what stays plus one. None when the log does not reach
    a whole window back (the limit was learned less than a window ago)."""
    window = state.window_seconds
    if window is None or state.logged_from is None or hit.sent_at - window < state.logged_from:
        return None
    index = 1 if hit.metric == "requests" else 2
    start = hit.sent_at - window
    carried = _sent_between(state, start, hit.sent_at, index)
    if hit.wait is not None and index == 1:
        leave = _sent_between(state, start, start + hit.wait + pacing.jitter_seconds, index)
        carried = min(carried, carried - leave + 1)
    return carried, window


def _room(state: ScopeState, carried: tuple[float, float], limit: float, hit: Hit, after: float) -> float:
    """The first moment from `after` the scope may send again so that none of its next requests,
    paced at the new `limit`, finds the window full: the requests it sent in the window (those
    still on their way included) must leave it first, as many as the window (`carried`, what it
    held) has no room for. The wait hint announces room for one request; a probe that overshot
    sent its window's last stretch faster than the new limit, and a limit that fell leaves the
    window fuller than the new one for a while."""
    held, window = math.floor(carried[0] + 1e-9), carried[1]
    spacing = hit.minute / limit
    times = sorted(entry[0] for entry in state.sends if entry[0] > after - window
                   for _ in range(round(entry[1])))   # a merged entry counts for each of its requests
    start = after
    for k in range(min(held, len(times) + 1)):   # the (k+1)-th request from `start` on
        leave = len(times) - (held - 1 - k)      # the window holds it, the k before it and the rest
        if leave > 0:
            start = max(start, times[leave - 1] + window - k * spacing)
    return start


def _sent_between(state: ScopeState, start: float, end: float, index: int) -> float:
    """Requests (`index` 1) or tokens (2) the scope sent after `start` and before `end`, and carried."""
    return sum(entry[index] for entry in state.sends if start < entry[0] < end)


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
