"""Reading the providers' rate-limit and retry headers.

Groq: `x-ratelimit-{limit,remaining,reset}-requests` count requests per DAY and `...-tokens` tokens
per MINUTE; resets are durations such as `2m59.56s`. Cerebras suffixes the period
(`x-ratelimit-remaining-requests-day`, `...-tokens-minute`) and sends resets as float seconds.
OpenAI-compatible servers use the unsuffixed names per minute. `retry-after` (seconds or an HTTP
date) and `retry-after-ms` come with a 429.
"""
from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Mapping

PERIOD_SECONDS = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0}

# What an unsuffixed header counts, by provider kind.
UNSUFFIXED_PERIODS: dict[str, dict[str, str]] = {
    "groq": {"requests": "day", "tokens": "minute"},
    "cerebras": {"requests": "day", "tokens": "minute"},
    "openai": {"requests": "minute", "tokens": "minute"},
}

_HEADER = re.compile(
    r"^x-ratelimit-(limit|remaining|reset)-(requests|tokens)(?:-(second|minute|hour|day))?$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|h|m|s))+$")


def parse_duration(text: str | None) -> float | None:
    """Seconds in '2m59.56s', '6h12m3s', '7.66s', '250ms' or a plain number; None if unreadable."""
    if text is None:
        return None
    value = str(text).strip().lower()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        if not _DURATION.match(value):
            return None
        unit_seconds = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
        seconds = sum(float(n) * unit_seconds[u] for n, u in _DURATION_PART.findall(value))
    if not math.isfinite(seconds) or seconds < 0:  # NaN, infinite or negative: unreadable
        return None
    return seconds


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """The wait a server asked for: `retry-after-ms`, then `retry-after` (seconds or HTTP date)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    millis = lowered.get("retry-after-ms")
    if millis is not None:
        try:
            value = float(millis) / 1000.0
            if math.isfinite(value) and value >= 0:
                return value
        except ValueError:
            pass
    after = lowered.get("retry-after")
    if after is None:
        return None
    try:
        value = float(after)
        return value if math.isfinite(value) and value >= 0 else None
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(after)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass(frozen=True)
class WindowReading:
    """One rate-limit window as the provider reported it."""

    metric: str        # "requests" or "tokens"
    period: str        # "second", "minute", "hour" or "day"
    limit: float | None
    remaining: float | None
    reset_seconds: float | None

    @property
    def exhausted(self) -> bool:
        return self.remaining is not None and self.remaining <= 0


def read_rate_limits(headers: Mapping[str, str], kind: str) -> list[WindowReading]:
    """Every rate-limit window the headers describe, with periods resolved for this provider kind."""
    defaults = UNSUFFIXED_PERIODS.get(kind, UNSUFFIXED_PERIODS["openai"])
    fields: dict[tuple[str, str], dict[str, str]] = {}
    for name, value in headers.items():
        match = _HEADER.match(name.lower())
        if not match:
            continue
        field, metric, period = match.groups()
        fields.setdefault((metric, period or defaults[metric]), {})[field] = value
    readings = []
    for (metric, period), values in sorted(fields.items()):
        readings.append(WindowReading(
            metric=metric,
            period=period,
            limit=_number(values.get("limit")),
            remaining=_number(values.get("remaining")),
            reset_seconds=parse_duration(values.get("reset")),
        ))
    return readings


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value == value else None
