"""Failure classification: any exception or unusable response becomes a `Failure`.

Two tables, read top to bottom:

* `SIGNAL_RULES` maps signals to a category. Each rule names the signals it needs (exception
  type, HTTP status, body error code, headers, message); all must match. The most specific match
  wins, signals weighing in the order they are trusted: status (or exception type) first, then
  the body's error code, then headers, and message text only as a last resort, always with word
  boundaries. Ties go to the rule listed first.
* `CATEGORY_SCOPE` says what a category condemns: the model, or the whole provider.

What to do about a failure (retry, next model, ...) is the fallback policy's business
(`fallback/policy.py`); this module only says what happened.
"""
from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Mapping

import httpx

from providers.exceptions import InvalidOutput, UnusableResponse
from providers.headers import parse_duration, read_rate_limits, retry_after_seconds

__all__ = ["Category", "Scope", "Failure", "classify", "redact", "InvalidOutput", "UnusableResponse"]


class Category(str, enum.Enum):
    AUTHENTICATION = "authentication"
    MODEL_UNAVAILABLE = "model_unavailable"
    RATE_LIMIT = "rate_limit"
    TIMEOUT = "timeout"
    CONNECTION_ERROR = "connection_error"
    SERVER_ERROR = "server_error"
    BAD_REQUEST = "bad_request"
    QUOTA_EXHAUSTED = "quota_exhausted"
    INVALID_OUTPUT = "invalid_output"
    UNKNOWN = "unknown"


class Scope(str, enum.Enum):
    MODEL = "model"
    PROVIDER = "provider"


CATEGORY_SCOPE: dict[Category, Scope] = {
    Category.AUTHENTICATION: Scope.PROVIDER,     # the key is rejected for every model
    Category.CONNECTION_ERROR: Scope.PROVIDER,   # the host is unreachable for every model
    Category.MODEL_UNAVAILABLE: Scope.MODEL,
    Category.RATE_LIMIT: Scope.MODEL,            # limits are per organisation and model
    Category.QUOTA_EXHAUSTED: Scope.MODEL,
    Category.TIMEOUT: Scope.MODEL,
    Category.SERVER_ERROR: Scope.MODEL,
    Category.BAD_REQUEST: Scope.MODEL,
    Category.INVALID_OUTPUT: Scope.MODEL,
    Category.UNKNOWN: Scope.MODEL,
}


@dataclass(frozen=True)
class Failure:
    category: Category
    scope: Scope
    wait_seconds: float | None      # how long the provider asked us to wait; None when unknown
    message: str                    # short, secrets removed
    status: int | None = None
    code: str | None = None
    reason: str | None = None       # finer detail: capacity, per_day, request_too_large, ...
    raw_output: str | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"category": self.category.value, "scope": self.scope.value,
                "wait_seconds": self.wait_seconds, "message": self.message,
                "status": self.status, "code": self.code, "reason": self.reason}


# --- secrets never leave -------------------------------------------------------------------

_SECRET_PATTERNS = [
    (re.compile(r"\b(gsk|csk|sk|hf|xai)[-_][A-Za-z0-9_\-]{8,}"), "[redacted-key]"),
    (re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._\-]+"), "Bearer [redacted]"),
    (re.compile(r"\borg_[A-Za-z0-9]{6,}"), "org_[redacted]"),
    (re.compile(r"(?i)(api[_-]?key[\"'=: ]+)[^\s\"',}]{6,}"), r"\1[redacted]"),
]


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Text with API keys, bearer tokens and organisation ids removed."""
    for secret in secrets:
        if secret and len(secret) >= 6:
            text = text.replace(secret, "[redacted]")
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


# --- signals -------------------------------------------------------------------------------

@dataclass
class Signals:
    """What an exception tells us, gathered once."""

    exc: BaseException
    status: int | None = None
    code: str | None = None
    message: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    kind: str = "openai"


def _body_error(body: Any) -> tuple[str | None, str]:
    """(error code, message) from an error body in any provider's shape."""
    if isinstance(body, (bytes, bytearray)):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str):
        return None, body
    if not isinstance(body, Mapping):
        return None, ""
    inner = body.get("error", body)
    if isinstance(inner, str):
        return (body.get("code") if isinstance(body.get("code"), str) else None), inner
    if not isinstance(inner, Mapping):
        return None, ""
    code = inner.get("code") or inner.get("type")
    message = inner.get("message") or inner.get("detail") or ""
    return (str(code) if code not in (None, "") else None), str(message)


def gather_signals(exc: BaseException, kind: str = "openai") -> Signals:
    signals = Signals(exc=exc, kind=kind)
    response = getattr(exc, "response", None)
    if isinstance(response, httpx.Response):
        signals.status = response.status_code            # the HTTP status, not a body rewrite
        signals.headers = dict(response.headers)
    if isinstance(exc, UnusableResponse):
        signals.headers = exc.headers
    body = getattr(exc, "body", None)
    code, message = _body_error(body)
    if body is None and isinstance(response, httpx.Response):
        try:
            code, message = _body_error(response.json())
        except Exception:
            code, message = None, ""
    signals.code = code
    signals.message = message or str(exc)
    return signals


# --- the signal table ----------------------------------------------------------------------

@lru_cache(maxsize=None)
def _sdk_classes(name: str) -> tuple[type, ...]:
    found: list[type] = []
    for module_name in ("groq", "cerebras.cloud.sdk", "openai"):
        try:
            module = __import__(module_name, fromlist=[name])
        except ImportError:
            continue
        cls = getattr(module, name, None)
        if isinstance(cls, type):
            found.append(cls)
    return tuple(found)


def _connect_timeout(s: Signals) -> bool:
    cause = s.exc.__cause__ or s.exc.__context__
    return isinstance(s.exc, httpx.ConnectTimeout) or isinstance(cause, httpx.ConnectTimeout)


def _daily_window_exhausted(s: Signals) -> bool:
    return any(r.exhausted and r.period == "day" for r in read_rate_limits(s.headers, s.kind))


def _cut_off(s: Signals) -> bool:
    """Unusable output from an answer cut off at its completion budget (`finish_reason: length`)."""
    return getattr(getattr(s.exc, "completion", None), "finish_reason", None) == "length"


@dataclass(frozen=True)
class SignalRule:
    category: Category
    exc: tuple[type, ...] | Callable[[], tuple[type, ...]] | None = None
    status: int | tuple[int, int] | None = None     # a status or an inclusive range
    code: str | None = None                         # regex, full match, case-insensitive
    when: Callable[[Signals], bool] | None = None    # a predicate over headers/causes
    message: str | None = None                      # regex searched case-insensitively
    reason: str | None = None
    fallback: bool = False                          # only when nothing else matched

    def weight(self) -> int:
        if self.fallback:
            return 0
        return (8 * (self.exc is not None or self.status is not None) + 4 * (self.code is not None)
                + 2 * (self.when is not None) + (self.message is not None))

    def matches(self, s: Signals) -> bool:
        if self.exc is not None:
            types = self.exc() if callable(self.exc) and not isinstance(self.exc, tuple) else self.exc
            if not isinstance(s.exc, types):
                return False
        if self.status is not None:
            if s.status is None:
                return False
            low, high = self.status if isinstance(self.status, tuple) else (self.status, self.status)
            if not low <= s.status <= high:
                return False
        if self.code is not None and not (s.code and re.fullmatch(self.code, s.code, re.I)):
            return False
        if self.when is not None and not self.when(s):
            return False
        if self.message is not None and not re.search(self.message, s.message, re.I):
            return False
        return True


@lru_cache(maxsize=None)
def _timeouts() -> tuple[type, ...]:
    return _sdk_classes("APITimeoutError") + (httpx.TimeoutException,)


@lru_cache(maxsize=None)
def _connections() -> tuple[type, ...]:
    return _sdk_classes("APIConnectionError") + (httpx.TransportError, ConnectionError)


@lru_cache(maxsize=None)
def _status_errors() -> tuple[type, ...]:
    return _sdk_classes("APIStatusError") + (httpx.HTTPStatusError,)


_PER_DAY = r"\bper day\b|\((?:RPD|TPD)\)|\b(?:RPD|TPD)\b|\bdaily\b"
_RATE_CODES = r"rate_limit_exceeded|request_quota_exceeded|token_quota_exceeded|too_many_requests(?:_error)?"
_AUTH_CODES = r"invalid_api_key|authentication_error|unauthorized|permission_denied|invalid_key"
_GONE = r"\bdecommissioned\b|\bno longer (?:supported|available)\b|\bmodel\b[^.]{0,60}\b(?:does not exist|not found)\b"

C = Category
SIGNAL_RULES: tuple[SignalRule, ...] = (
    # Exceptions without an HTTP response.
    SignalRule(C.CONNECTION_ERROR, exc=_timeouts, when=_connect_timeout, reason="connect_timeout"),
    SignalRule(C.TIMEOUT, exc=_timeouts),
    SignalRule(C.CONNECTION_ERROR, exc=_connections),
    SignalRule(C.INVALID_OUTPUT, exc=(InvalidOutput,)),
    SignalRule(C.INVALID_OUTPUT, exc=(InvalidOutput,), when=_cut_off, reason="truncated"),
    # HTTP status, refined by body code, headers and (last) message.
    SignalRule(C.BAD_REQUEST, status=400),
    SignalRule(C.INVALID_OUTPUT, status=400, code=r"json_validate_failed|output_parse_failed"),
    SignalRule(C.MODEL_UNAVAILABLE, status=400, code=r"model_decommissioned", reason="model_gone"),
    SignalRule(C.MODEL_UNAVAILABLE, status=400, message=_GONE, reason="model_gone"),
    SignalRule(C.BAD_REQUEST, status=400, code=r"context_length_exceeded", reason="context_length"),
    SignalRule(C.BAD_REQUEST, status=400, message=r"\brequest too large\b", reason="request_too_large"),
    SignalRule(C.AUTHENTICATION, status=401),
    SignalRule(C.AUTHENTICATION, status=402, reason="payment_required"),
    SignalRule(C.AUTHENTICATION, status=403),
    SignalRule(C.MODEL_UNAVAILABLE, status=404, reason="model_gone"),
    SignalRule(C.TIMEOUT, status=408),
    SignalRule(C.BAD_REQUEST, status=413, reason="request_too_large"),
    SignalRule(C.BAD_REQUEST, status=422),
    SignalRule(C.RATE_LIMIT, status=429),
    SignalRule(C.QUOTA_EXHAUSTED, status=429, code=r"insufficient_quota|quota_exceeded", reason="per_day"),
    SignalRule(C.QUOTA_EXHAUSTED, status=429, when=_daily_window_exhausted, reason="per_day"),
    SignalRule(C.QUOTA_EXHAUSTED, status=429, message=_PER_DAY, reason="per_day"),
    SignalRule(C.QUOTA_EXHAUSTED, status=429, code=_RATE_CODES, message=_PER_DAY, reason="per_day"),
    SignalRule(C.MODEL_UNAVAILABLE, status=498, reason="capacity"),
    SignalRule(C.SERVER_ERROR, status=503, reason="capacity"),
    SignalRule(C.TIMEOUT, status=504),
    SignalRule(C.SERVER_ERROR, status=(500, 599)),
    SignalRule(C.BAD_REQUEST, status=(400, 499), fallback=True),
    # Body codes alone: a 2xx error body, or a status we have no rule for.
    SignalRule(C.RATE_LIMIT, code=_RATE_CODES),
    SignalRule(C.QUOTA_EXHAUSTED, code=_RATE_CODES, message=_PER_DAY, reason="per_day"),
    SignalRule(C.QUOTA_EXHAUSTED, code=r"insufficient_quota", reason="per_day"),
    SignalRule(C.AUTHENTICATION, code=_AUTH_CODES),
    SignalRule(C.MODEL_UNAVAILABLE, code=r"model_not_found|model_not_available", reason="model_gone"),
    SignalRule(C.MODEL_UNAVAILABLE, code=r"model_decommissioned", reason="model_gone"),
    SignalRule(C.MODEL_UNAVAILABLE, code=r"over_capacity|capacity_exceeded|queue_exceeded|overloaded(?:_error)?",
               reason="capacity"),
    SignalRule(C.INVALID_OUTPUT, code=r"json_validate_failed|output_parse_failed"),
    SignalRule(C.BAD_REQUEST, code=r"context_length_exceeded|invalid_request_error", reason="context_length"),
    SignalRule(C.SERVER_ERROR, code=r"server_error|internal_error|internal_server_error|service_unavailable"),
    # Message text: last resort, word boundaries only.
    SignalRule(C.QUOTA_EXHAUSTED, message=r"\b(?:rate|usage) limit\b[^.]*(?:" + _PER_DAY + ")", reason="per_day"),
    SignalRule(C.RATE_LIMIT, message=r"\brate limit(?:ed)?\b|\btoo many requests\b"),
    SignalRule(C.MODEL_UNAVAILABLE, message=_GONE, reason="model_gone"),
    SignalRule(C.MODEL_UNAVAILABLE, message=r"\bover capacity\b|\boverloaded\b", reason="capacity"),
    SignalRule(C.AUTHENTICATION, message=r"\binvalid api key\b|\bunauthori[sz]ed\b"),
    SignalRule(C.SERVER_ERROR, message=r"\binternal server error\b|\bservice unavailable\b|\bbad gateway\b"),
    SignalRule(C.TIMEOUT, message=r"\btimed out\b|\btimeout\b"),
    # Anything a 2xx produced that says nothing more: the provider sent us something unusable.
    SignalRule(C.SERVER_ERROR, exc=(UnusableResponse,), reason="unusable_response", fallback=True),
)
del C


@lru_cache(maxsize=None)
def _provider_exceptions() -> tuple[type, ...]:
    """What a provider call itself raises: the SDKs' errors, httpx's, and our unusable-response ones."""
    # every SDK error derives from its APIError; every httpx error from httpx.HTTPError
    return _sdk_classes("APIError") + (httpx.HTTPError, ConnectionError, UnusableResponse, InvalidOutput)


def _pick_rule(signals: Signals) -> SignalRule | None:
    """The most specific matching rule. Rules that read only a body code or message text apply only to
    exceptions a provider call raised: any other exception (our own bug, e.g. a `ValueError("Invalid
    API key format")`) is never taken for a provider failure."""
    from_provider = isinstance(signals.exc, _provider_exceptions())
    best: SignalRule | None = None
    for rule in SIGNAL_RULES:
        if not from_provider and rule.exc is None and rule.status is None:
            continue
        if (best is None or rule.weight() > best.weight()) and rule.matches(signals):
            best = rule
    return best


# --- wait hints ----------------------------------------------------------------------------

_TRY_AGAIN = re.compile(r"(?i)\b(?:try again|retry) in\s+((?:\d+(?:\.\d+)?\s*(?:ms|h|m|s)\s*)+)")
_SECONDS_WORDS = re.compile(r"(?i)\b(?:try again|retry) in\s+(\d+(?:\.\d+)?)\s*(?:seconds?|secs?)\b")


def _message_wait(message: str) -> float | None:
    match = _TRY_AGAIN.search(message)
    if match:
        return parse_duration(re.sub(r"\s+", "", match.group(1)))
    match = _SECONDS_WORDS.search(message)
    return parse_duration(match.group(1)) if match else None


def _reset_wait(signals: Signals) -> float | None:
    """The reset of the window that ran out (the longest, if several did)."""
    readings = read_rate_limits(signals.headers, signals.kind)
    exhausted = [r.reset_seconds for r in readings if r.exhausted and r.reset_seconds is not None]
    if exhausted:
        return max(exhausted)
    return None


def wait_hint(signals: Signals, category: Category) -> float | None:
    """Seconds the provider asked us to wait, from the most explicit hint available; None when no
    hint is readable (NaN, infinite and negative values are not hints). Capping is the policy's job."""
    for hint in (retry_after_seconds(signals.headers), _message_wait(signals.message)):
        if hint is not None and math.isfinite(hint) and hint >= 0:
            return hint
    if category in (Category.RATE_LIMIT, Category.QUOTA_EXHAUSTED):
        return _reset_wait(signals)
    return None


# --- the one entry point -------------------------------------------------------------------

def classify(exc: BaseException, kind: str = "openai", secrets: tuple[str, ...] = ()) -> Failure:
    """Turn any exception from a provider call (or from parsing its output) into a `Failure`."""
    signals = gather_signals(exc, kind)
    rule = _pick_rule(signals)
    if rule is None:
        known_api_error = isinstance(exc, _provider_exceptions())
        category, reason = Category.UNKNOWN, (None if known_api_error else "internal")
    else:
        category, reason = rule.category, rule.reason
    parts = [str(signals.status)] if signals.status else []
    if signals.code:
        parts.append(signals.code)
    detail = signals.message.strip() or type(exc).__name__
    summary = redact(f"{' '.join(parts) + ': ' if parts else ''}{detail}", secrets)
    return Failure(
        category=category,
        scope=CATEGORY_SCOPE[category],
        wait_seconds=wait_hint(signals, category),
        message=_shorten(summary),
        status=signals.status,
        code=signals.code,
        reason=reason,
        raw_output=getattr(exc, "raw_output", None),
    )


def _shorten(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def warm_up() -> None:
    """Import the SDKs' exception classes now rather than during the first failure."""
    _timeouts(), _connections(), _status_errors()
