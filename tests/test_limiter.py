"""The proactive rate limiter (GCRA pacing), on a clock the tests move by hand."""
from __future__ import annotations

import json
import math

import pytest

from config.providers import Limits, PacingConfig
from fallback import learning
from fallback.limiter import RateLimiter, Reservation
from fallback.limiter_state import MemoryStore, ScopeState
from providers.headers import read_rate_limits
from tests.conftest import ManualClock
from tests.racing import race, switch

KEY = ("groq", "m")
MINUTE = 60.75  # a minute window plus its grace (1 % and 0.15 s): what one unit of a per-minute limit is spread over


def limiter(clock, **limits):
    return RateLimiter({KEY: Limits(**limits)}, clock)


def test_requests_per_minute_are_spread_evenly_over_the_window():
    clock = ManualClock()
    rl = limiter(clock, rpm=2)
    assert isinstance(rl.reserve(*KEY, 10), Reservation)
    wait = rl.reserve(*KEY, 10)
    assert wait == pytest.approx(MINUTE / 2) and wait.windows == ("rpm",)   # not a burst of two
    clock.advance(MINUTE / 2 - 0.1)
    assert rl.reserve(*KEY, 10) == pytest.approx(0.1)
    clock.advance(0.1)
    assert isinstance(rl.reserve(*KEY, 10), Reservation)


def test_a_steady_stream_keeps_every_window_within_the_limit():
    """Admit whenever allowed for ten minutes: any minute holds at most the limit, and the total is
    the limit's rate (what a burst-then-wait limiter would also admit, only spread out)."""
    clock = ManualClock(0.0)
    rl = limiter(clock, rpm=30)
    admitted = []
    while clock() < 600:
        result = rl.reserve(*KEY, 1)
        if isinstance(result, Reservation):
            admitted.append(clock())
        else:
            clock.advance(float(result))
    assert max(sum(1 for t in admitted if start <= t < start + 60) for start in admitted) <= 30
    assert len(admitted) >= 10 * 30 * 60 / MINUTE - 1
    gaps = {round(b - a, 6) for a, b in zip(admitted, admitted[1:])}
    assert gaps == {round(MINUTE / 30, 6)}


def test_a_busy_token_window_keeps_a_short_log_and_still_never_overfills():
    """Lumpy costs at a high rate for five minutes: the log each reserve reads and writes stays
    bounded (in PostgreSQL mode it travels through the database), and no 60-second stretch is
    charged more than the limit."""
    from fallback.limiter import LOG_ENTRIES

    clock = ManualClock(0.0)
    store = MemoryStore()
    rl = RateLimiter({KEY: Limits(tpm=100_000)}, clock, store=store)
    admitted: list[tuple[float, int]] = []
    costs = [100, 2_500, 700, 4_000, 300]
    while clock() < 300:
        cost = costs[len(admitted) % len(costs)]
        result = rl.reserve(*KEY, cost)
        if isinstance(result, Reservation):
            admitted.append((clock(), cost))
            assert len(store.read()["groq/m"].log["tpm"]) <= LOG_ENTRIES
        else:
            clock.advance(float(result))
    assert len(admitted) > 3 * LOG_ENTRIES
    assert max(sum(c for t, c in admitted if start <= t < start + 60) for start, _ in admitted) <= 100_000


def test_tokens_are_reserved_then_settled_to_real_usage():
    clock = ManualClock()
    rl = limiter(clock, tpm=1000)
    first = rl.reserve(*KEY, 800)
    assert rl.reserve(*KEY, 300) == pytest.approx(MINUTE)   # 800 + 300 do not fit in one window
    rl.settle(first, 150)                                                 # the call used only 150
    assert rl.reserve(*KEY, 300) == pytest.approx(150 * MINUTE / 1000)
    assert rl.snapshot(*KEY)["tpm"]["remaining"] == pytest.approx(850)


def test_a_request_larger_than_the_limit_never_fits():
    rl = limiter(ManualClock(), tpm=1000)
    assert rl.reserve(*KEY, 1001) == math.inf


def test_day_windows_may_be_spent_at_once_then_refill_at_their_rate():
    clock = ManualClock()
    rl = limiter(clock, rpd=2)
    assert isinstance(rl.reserve(*KEY, 1), Reservation) and isinstance(rl.reserve(*KEY, 1), Reservation)
    day_unit = (86400 + 1 + 0.15) / 2
    assert rl.reserve(*KEY, 1) == pytest.approx(day_unit)
    clock.advance(day_unit)
    assert isinstance(rl.reserve(*KEY, 1), Reservation)


def test_a_short_window_reported_nearly_spent_is_held_until_its_reset():
    clock = ManualClock()
    rl = limiter(clock, tpm=10000)
    # Someone else in the organisation used most of the minute: 500 left, reset in 12 s.
    rl.observe(*KEY, read_rate_limits({"x-ratelimit-limit-tokens": "10000", "x-ratelimit-remaining-tokens": "500",
                                      "x-ratelimit-reset-tokens": "12s"}, "groq"), need=2000)
    assert rl.reserve(*KEY, 2000) == pytest.approx(12)
    clock.advance(12)
    assert isinstance(rl.reserve(*KEY, 2000), Reservation)


def test_plenty_left_in_the_headers_changes_nothing():
    clock = ManualClock()
    rl = limiter(clock, tpm=10000)
    rl.observe(*KEY, read_rate_limits({"x-ratelimit-remaining-tokens": "9000", "x-ratelimit-reset-tokens": "50s"},
                                      "groq"), need=2000)
    assert isinstance(rl.reserve(*KEY, 2000), Reservation)


def test_headers_teach_limits_the_configuration_did_not_know():
    clock = ManualClock()
    rl = limiter(clock)
    rl.observe(*KEY, read_rate_limits({"x-ratelimit-limit-requests-day": "100",
                                      "x-ratelimit-remaining-requests-day": "0",
                                      "x-ratelimit-reset-requests-day": "3600.5"}, "cerebras"))
    assert rl.reserve(*KEY, 1) == pytest.approx(3600.5)
    assert rl.snapshot(*KEY)["rpd"]["limit"] == 100


def test_settling_with_the_headers_is_one_transaction_doing_both():
    """After a call the router settles the reservation and reads the headers: in PostgreSQL mode
    each transaction is a round trip of the limiter's rows, so both happen in one."""
    clock = ManualClock()
    store = MemoryStore()
    calls: list[list[str]] = []
    transact = store.transact
    store.transact = lambda keys, fn: calls.append(list(keys)) or transact(keys, fn)   # type: ignore[method-assign]
    rl = RateLimiter({KEY: Limits(tpm=1000)}, clock, store=store)
    first = rl.reserve(*KEY, 800)
    calls.clear()
    rl.settle(first, 150, read_rate_limits({"x-ratelimit-limit-requests-day": "100",
                                            "x-ratelimit-remaining-requests-day": "0",
                                            "x-ratelimit-reset-requests-day": "30"}, "cerebras"))
    assert len(calls) == 1
    assert rl.snapshot(*KEY)["rpd"]["limit"] == 100                  # the headers were read
    assert rl.reserve(*KEY, 300) == pytest.approx(30)                # held by the day window they reported...
    clock.advance(30)
    assert isinstance(rl.reserve(*KEY, 800), Reservation)            # ...then 150 + 800 fit: settled to 150


def test_time_scale_shortens_every_window():
    clock = ManualClock()
    rl = RateLimiter({KEY: Limits(rpm=6)}, clock, PacingConfig(time_scale=0.1))
    rl.reserve(*KEY, 1)
    assert rl.reserve(*KEY, 1) == pytest.approx((6 + 0.06 + 0.15) / 6)


def test_the_state_is_small_and_serializable():
    clock = ManualClock()
    store = MemoryStore()
    rl = RateLimiter({KEY: Limits(rpm=30, tpm=6000)}, clock, store=store)
    rl.settle(rl.reserve(*KEY, 1000), 700)
    states = store.read()
    for key, state in states.items():
        text = json.dumps(state.to_dict())
        assert len(text) < 1000 and ScopeState.from_dict(json.loads(text)) == state
    assert set(states["groq/m"].tat) == {"rpm", "tpm"}


class RacyLimiter(RateLimiter):
    """The real limiter, letting other threads run between measuring the room left and taking it:
    the gap the store's lock must close."""

    def _longest(self, *args, **kwargs):
        wait = super()._longest(*args, **kwargs)
        switch()
        return wait


ROUNDS = 10


def test_racing_reservations_never_admit_more_than_the_limit():
    for _ in range(ROUNDS):
        rl = RacyLimiter({KEY: Limits(rpd=5, tpd=5 * 100)}, ManualClock())
        granted = [r for r in race(lambda i: rl.reserve(*KEY, 100)) if isinstance(r, Reservation)]
        assert len(granted) == 5          # 16 threads asked at once: exactly the limit got in
        race(lambda i: rl.settle(granted[i], 100) if i < len(granted) else None)
        snapshot = rl.snapshot(*KEY)
        assert snapshot["rpd"]["remaining"] == pytest.approx(0) and snapshot["tpd"]["remaining"] == pytest.approx(0)


def test_racing_steady_windows_admit_one_at_a_time():
    for _ in range(ROUNDS):
        rl = RacyLimiter({KEY: Limits(rpm=5)}, ManualClock())
        granted = [r for r in race(lambda i: rl.reserve(*KEY, 1)) if isinstance(r, Reservation)]
        assert len(granted) == 1


# -- limits learned from 429s (fallback/learning.py) ---------------------------------------------

MODELS = {("groq", "a"): Limits(rpm=30), ("groq", "b"): Limits(rpm=30)}


def send(rl, clock, model, count, tokens=100):
    """Admit `count` requests to `model` as fast as the limiter lets them go; their reservations."""
    out = []
    while len(out) < count:
        result = rl.reserve("groq", model, tokens)
        if isinstance(result, Reservation):
            out.append(result)
        else:
            clock.advance(float(result))
    return out


def test_two_models_refused_until_the_same_moment_share_one_learned_budget():
    clock = ManualClock(0.0)
    rl = RateLimiter(MODELS, clock)
    sent = send(rl, clock, "a", 2) + send(rl, clock, "b", 2)   # the provider accepts these four...
    for reservation in sent:
        rl.settle(reservation, 100)
    clock.advance(0.5)
    late_a, late_b = send(rl, clock, "a", 1)[0], send(rl, clock, "b", 1)[0]
    rl.rate_limited(late_a, 8.0, "Rate limit reached on requests per minute (RPM)")   # ...then refuses,
    rl.rate_limited(late_b, 8.0 - 0.01, "Rate limit reached on requests per minute (RPM)")  # both until t+8
    learned = rl.learned_limits("groq")
    assert [(e["scope"], e["model"], e["window"]) for e in learned] == [("provider", None, "rpm")]
    assert learned[0]["ceiling"] == 60                           # the models' own limits, summed
    assert rl.reserve("groq", "a", 100) > 7                      # nothing goes before the window frees
    assert rl.reserve("groq", "b", 100) > 7


def test_one_model_refused_alone_learns_its_own_limit_from_a_token_message():
    clock = ManualClock(0.0)
    rl = RateLimiter(MODELS, clock)
    for reservation in send(rl, clock, "a", 3, tokens=1000):
        rl.settle(reservation, 1000)
    late = send(rl, clock, "a", 1, tokens=1000)[0]
    rl.rate_limited(late, 20.0, "Rate limit reached on tokens per minute (TPM): Limit 6000")
    learned = rl.learned_limits("groq")
    assert [(e["scope"], e["model"], e["window"]) for e in learned] == [("model", "a", "tpm")]
    assert 3000 <= learned[0]["limit"] <= 3000 / 20 * 60   # 3,000 accepted over what the window spans
    assert isinstance(rl.reserve("groq", "b", 1000), Reservation)   # the other model is not held


def limited_once(rpm: int) -> tuple[ManualClock, RateLimiter]:
    """A limiter whose model `a` (configured at `rpm`) took five requests, then a 429 without a
    declared limit: a limit is learned."""
    clock = ManualClock(0.0)
    rl = RateLimiter({("groq", "a"): Limits(rpm=rpm)}, clock)
    for reservation in send(rl, clock, "a", 5):
        rl.settle(reservation, 100)
    rl.rate_limited(send(rl, clock, "a", 1)[0], 5.0, "slow down")
    return clock, rl


def test_a_learned_limit_is_probed_upward_and_dropped_at_the_configured_ceiling():
    clock, rl = limited_once(rpm=30)
    first = rl.learned_limits("groq")[0]["limit"]
    assert first < 30
    seen = [first]
    while rl.learned_limits("groq"):
        clock.advance(30)
        rl.wait_time("groq", "a", 1)          # time passes without a 429...
        rl.reserve("groq", "a", 1)            # ...and the limiter looks again
        seen += [e["limit"] for e in rl.learned_limits("groq")]
        assert len(seen) < 30
    assert seen == sorted(seen) and len(seen) > 2     # rose step by step, then gave way to the ceiling
    assert rl.snapshot("groq", "a")["rpm"]["limit"] == 30


def test_a_straggler_refines_a_relearned_limit_too():
    """Requests still on their way when a limit is learned were counted as accepted; their 429s
    correct the estimate down, for a limit learned again as for the first one (no lower than a
    relearned limit may drop at once, `learn_decrease`)."""
    clock, rl = limited_once(rpm=60)
    first = rl.learned_limits("groq")[0]["limit"]
    sent = send(rl, clock, "a", 12)          # paced at the learned limit; the last two still on their way...
    for reservation in sent[:-2]:
        rl.settle(reservation, 100)
    rl.rate_limited(send(rl, clock, "a", 1)[0], 5.0, "slow down")   # ...when a later one is refused
    second = rl.learned_limits("groq")[0]["limit"]
    for straggler in sent[-2:]:
        rl.rate_limited(straggler, 5.0, "slow down")
    refined = rl.learned_limits("groq")[0]["limit"]
    assert 0.7 * first <= refined < second < first


def probed(times: list[float], learned: float = 60.0) -> ScopeState:
    """A scope whose learned limit (per 60-second minute, 10-second window) a probe had raised to
    `learned`, having sent requests at `times` (the log of what it carried)."""
    return ScopeState(learned={"rpm": learned}, window_seconds=10.0, logged_from=-100.0, since=-100.0,
                      sends=[[t, 1.0, 100.0] for t in times], sent={"requests": float(len(times))})


def refused(state: ScopeState, sent_at: float, wait: float | None, now: float | None = None) -> learning.Hit:
    hit = learning.Hit(now=sent_at + 0.3 if now is None else now, sent_at=sent_at, wait=wait,
                       metric="requests", minute=60.0)
    learning.note_rejected(state, hit, 100)
    return hit


def test_a_probe_that_overshoots_falls_back_to_what_the_window_carried():
    """Quick probes raised the limit to 60 a minute (10 a window) before a 429 could show any of
    them was too much; the window before the refused request carried 5: the provider's limit. The
    limit falls back to 5 a window x 0.95, not to the level before the latest raise (too much
    already) nor by the usual decrease (60 x 0.7 = 42, too much too)."""
    state = probed([-3.0, -1.0, 1.0, 4.0, 6.5, 8.5, 9.5])   # ...and a request at 9.9 refused
    hit = refused(state, 9.9, wait=1.1)                      # until the one sent at 1.0 leaves
    assert learning.evidence(state, hit, PacingConfig()) == (5.0, 10.0)   # 1.0 ... 9.5
    assert learning.estimate(state, hit, 60.0, PacingConfig()) == pytest.approx(5 * 6 * 0.95)


def test_a_limit_that_fell_meanwhile_is_what_the_wait_hint_leaves_room_for():
    """The window before the refused request carried 8, but the provider says it frees in 5 s:
    the four sent in its first 5 s must leave before one more fits, so the window holds 4 + 1
    (someone else took a share of the limit)."""
    state = probed([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
    hit = refused(state, 9.0, wait=5.0)
    assert learning.evidence(state, hit, PacingConfig()) == (5.0, 10.0)
    unhinted = probed([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
    assert learning.evidence(unhinted, refused(unhinted, 9.0, wait=None), PacingConfig())[0] == 8.0


def test_after_an_overshoot_the_scope_waits_until_its_window_has_room_for_the_new_pace():
    """A probe that overshot sent the window's last stretch fast: the wait hint's one free place is
    not enough, the next requests at the new pace would find the window full again. The scope waits
    until every one of them fits, and no longer."""
    times = [0.0, 5.0, 8.0, 8.5, 9.0, 9.5]
    state = probed(times)
    hit = refused(state, 9.6, wait=0.1, now=9.8)
    pacing = PacingConfig()
    limit = learning.estimate(state, hit, 60.0, pacing)
    assert limit == pytest.approx(6 * 6 * 0.95)
    learning.learn(state, hit, limit, pacing)
    start, spacing = state.tat["rpm"], 60.0 / limit
    assert start > hit.now + hit.wait + 1                       # longer than the hint alone
    ahead = [start + k * spacing for k in range(6)]
    for at in ahead:                                            # every window holds at most 6
        assert sum(1 for t in times + ahead if at - 10.0 < t <= at) <= 6
    earlier = [start - 0.1 + k * spacing for k in range(6)]    # a moment earlier, one would not fit
    assert any(sum(1 for t in times + earlier if at - 10.0 < t <= at) > 6 for at in earlier)


def test_the_window_is_timed_from_the_refused_requests_sending():
    """The provider times its wait hint from the refused request's arrival, as it counted the first
    request's: from their sending, the way there cancels; from our receiving the 429 the window
    would also hold the way back (here 1 s)."""
    state = ScopeState(since=0.0, sent={"requests": 6.0})
    hit = learning.Hit(now=3.0, sent_at=2.0, wait=8.0, metric="requests", minute=60.0)
    learning.note_rejected(state, hit, 100)
    assert learning.estimate(state, hit, None, PacingConfig()) == pytest.approx(5 / 10 * 60 * 0.95)
    learning.learn(state, hit, 28.5, PacingConfig())
    assert state.window_seconds == pytest.approx(10.0)


def test_after_its_first_step_a_learned_limit_is_probed_every_quarter_window_by_at_most_40_percent():
    """A limit that rises again (another user stops) is found within about two windows: the first
    probe waits half a calm window, the next ones a quarter, each step doubling up to 40 %."""
    clock, rl = limited_once(rpm=600)
    entry = rl.learned_limits("groq")[0]
    window, limits = entry["window_seconds_estimated"], [entry["limit"]]
    assert entry["next_probe_seconds"] == pytest.approx(5.0 + 0.5 * window, abs=0.1)
    clock.advance(entry["next_probe_seconds"])
    for _ in range(6):
        rl.wait_time("groq", "a", 1)
        rl.reserve("groq", "a", 1)
        entry = rl.learned_limits("groq")[0]
        limits.append(entry["limit"])
        assert entry["next_probe_seconds"] == pytest.approx(0.25 * window, abs=0.1)
        clock.advance(entry["next_probe_seconds"])
    steps = [round(b / a - 1, 2) for a, b in zip(limits, limits[1:])]
    assert steps == [0.05, 0.1, 0.2, 0.4, 0.4, 0.4], steps

