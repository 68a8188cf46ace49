"""Reading durations, retry-after and the providers' rate-limit headers."""
from __future__ import annotations

from email.utils import formatdate

import pytest

from providers.headers import parse_duration, read_rate_limits, retry_after_seconds


@pytest.mark.parametrize("text, seconds", [
    ("2m59.56s", 179.56), ("6h12m3s", 22323.0), ("7.66s", 7.66), ("250ms", 0.25), ("33011.382867", 33011.382867),
    ("1h", 3600.0), ("0s", 0.0),
])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "-3", "5 minutes", None, "nan"])
def test_parse_duration_rejects_garbage(text):
    assert parse_duration(text) is None


def test_retry_after_prefers_milliseconds_then_seconds_then_dates():
    assert retry_after_seconds({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert retry_after_seconds({"Retry-After": "9"}) == 9.0
    now = 1_800_000_000.0
    assert retry_after_seconds({"retry-after": formatdate(now + 30, usegmt=True)}, now=now) == pytest.approx(30, abs=1)
    assert retry_after_seconds({"retry-after": "whenever"}) is None
    assert retry_after_seconds({}) is None


def test_groq_headers_count_requests_per_day_and_tokens_per_minute():
    readings = read_rate_limits({
        "x-ratelimit-limit-requests": "14400", "x-ratelimit-remaining-requests": "14370",
        "x-ratelimit-reset-requests": "2m59.56s", "x-ratelimit-limit-tokens": "18000",
        "x-ratelimit-remaining-tokens": "17997", "x-ratelimit-reset-tokens": "7.66s"}, "groq")
    by_metric = {(r.metric, r.period): r for r in readings}
    assert by_metric[("requests", "day")].remaining == 14370
    assert by_metric[("requests", "day")].reset_seconds == pytest.approx(179.56)
    assert by_metric[("tokens", "minute")].limit == 18000
    assert not any(r.exhausted for r in readings)


def test_cerebras_headers_are_suffixed_with_float_second_resets():
    readings = read_rate_limits({
        "x-ratelimit-limit-requests-day": "14400", "x-ratelimit-remaining-requests-day": "0",
        "x-ratelimit-reset-requests-day": "33011.382867", "x-ratelimit-limit-tokens-minute": "60000",
        "x-ratelimit-remaining-tokens-minute": "59000", "x-ratelimit-reset-tokens-minute": "11.38"}, "cerebras")
    day = next(r for r in readings if r.period == "day")
    assert day.exhausted and day.reset_seconds == pytest.approx(33011.382867)


def test_openai_style_unsuffixed_requests_are_per_minute():
    readings = read_rate_limits({"x-ratelimit-remaining-requests": "5"}, "openai")
    assert [(r.metric, r.period) for r in readings] == [("requests", "minute")]
