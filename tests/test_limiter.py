"""The proactive rate limiter, on a clock the tests move by hand."""
from __future__ import annotations

import math

import pytest

from fallback.limiter import RateLimiter, Reservation, _Window
from config.providers import Limits
from providers.headers import read_rate_limits
from tests.conftest import ManualClock
from tests.racing import race, switch

KEY = ("groq", "m")


def limiter(clock, **limits):
    return RateLimiter({KEY: Limits(**limits)}, clock)


def test_requests_per_minute_are_paced():
    clock = ManualClock()
    rl = limiter(clock, rpm=2)
    assert isinstance(rl.reserve(*KEY, 10), Reservation)
    clock.advance(10)
    assert isinstance(rl.reserve(*KEY, 10), Reservation)
    assert rl.reserve(*KEY, 10) == pytest.approx(50.6)  # the first entry frees at t+60, plus 0.6 s grace
    clock.advance(50.5)
    assert rl.reserve(*KEY, 10) == pytest.approx(0.1)
    clock.advance(0.1)
    assert isinstance(rl.reserve(*KEY, 10), Reservation)


def test_tokens_are_reserved_then_settled_to_real_usage():
    clock = ManualClock()
    rl = limiter(clock, tpm=1000)
    first = rl.reserve(*KEY, 800)
    assert rl.reserve(*KEY, 300) > 0            # 800 reserved, 300 more does not fit
    rl.settle(first, 150)                        # the call used only 150
    assert isinstance(rl.reserve(*KEY, 300), Reservation)
    assert rl.snapshot(*KEY)["tpm"]["remaining"] == 550


def test_a_request_larger_than_the_limit_never_fits():
    rl = limiter(ManualClock(), tpm=1000)
    assert rl.reserve(*KEY, 1001) == math.inf


def test_day_windows_hold_for_a_day():
    clock = ManualClock()
    rl = limiter(clock, rpd=1)
    rl.reserve(*KEY, 1)
    assert rl.reserve(*KEY, 1) == pytest.approx(86401)  # a day plus a second of grace
    clock.advance(86401)
    assert isinstance(rl.reserve(*KEY, 1), Reservation)


def test_headers_correct_the_local_view():
    clock = ManualClock()
    rl = limiter(clock, tpm=10000)
    # Someone else in the organisation used most of the minute: 500 left, reset in 12 s.
    rl.observe(*KEY, read_rate_limits({"x-ratelimit-limit-tokens": "10000", "x-ratelimit-remaining-tokens": "500",
                                      "x-ratelimit-reset-tokens": "12s"}, "groq"))
    wait = rl.reserve(*KEY, 2000)
    assert wait == pytest.approx(12)
    clock.advance(12)
    assert isinstance(rl.reserve(*KEY, 2000), Reservation)


def test_headers_teach_limits_the_configuration_did_not_know():
    clock = ManualClock()
    rl = limiter(clock)
    rl.observe(*KEY, read_rate_limits({"x-ratelimit-limit-requests-day": "100",
                                      "x-ratelimit-remaining-requests-day": "0",
                                      "x-ratelimit-reset-requests-day": "3600.5"}, "cerebras"))
    assert rl.reserve(*KEY, 1) == pytest.approx(3600.5)
    assert rl.snapshot(*KEY)["rpd"]["limit"] == 100


class _RacyWindow(_Window):
    """A window that lets other threads run between measuring the room left and reporting it,
    and inside its own read-modify-write of `used`: the gaps the limiter's lock must close."""

    def wait_for(self, amount: float, now: float) -> float:
        wait = super().wait_for(amount, now)
        switch()
        return wait

    def add(self, amount: float, at: float):
        switch()
        return super().add(amount, at)

    def adjust(self, entry, amount: float) -> None:
        switch()
        super().adjust(entry, amount)


class RacyLimiter(RateLimiter):
    """The real limiter, with every window a `_RacyWindow`."""

    def _windows_for(self, provider: str, model: str):
        windows = super()._windows_for(provider, model)
        for window in windows.values():
            window.__class__ = _RacyWindow
        return windows


ROUNDS = 10


def test_racing_reservations_never_admit_more_than_the_limit():
    for _ in range(ROUNDS):
        rl = RacyLimiter({KEY: Limits(rpm=5, tpm=5 * 100)}, ManualClock())
        granted = [r for r in race(lambda i: rl.reserve(*KEY, 100)) if isinstance(r, Reservation)]
        assert len(granted) == 5          # 16 threads asked at once: exactly the limit got in
        race(lambda i: rl.settle(granted[i], 100) if i < len(granted) else None)
        assert rl.snapshot(*KEY) == {"rpm": {"limit": 5, "remaining": 0}, "tpm": {"limit": 500, "remaining": 0}}


def test_racing_reserve_and_settle_keep_the_books():
    """Threads reserve 1,000 tokens and settle to the 400 really used, all at once: the window's
    count stays exactly the sum of what was settled, and a reservation is only admitted while it
    fits, so at most 1 + (10,000 - 1,000) / 400 = 23 get in."""
    for _ in range(ROUNDS):
        rl = RacyLimiter({KEY: Limits(tpm=10_000)}, ManualClock())

        def work(i: int) -> int:
            admitted = 0
            for _ in range(4):
                reservation = rl.reserve(*KEY, 1000)
                if not isinstance(reservation, Reservation):
                    break
                admitted += 1
                rl.settle(reservation, 400)
            return admitted

        admitted = sum(race(work))
        assert admitted <= 23
        assert rl.snapshot(*KEY)["tpm"]["remaining"] == 10_000 - 400 * admitted
