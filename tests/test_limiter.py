"""The proactive rate limiter, on a clock the tests move by hand."""
from __future__ import annotations

import math
import threading

import pytest

from fallback.limiter import RateLimiter, Reservation
from config.providers import Limits
from providers.headers import read_rate_limits
from tests.conftest import ManualClock

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


def test_concurrent_reservations_never_exceed_the_limit():
    rl = limiter(ManualClock(), rpm=50, tpm=10_000)
    granted = []

    def worker():
        for _ in range(20):
            result = rl.reserve(*KEY, 100)
            if isinstance(result, Reservation):
                granted.append(result)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(granted) == 50
