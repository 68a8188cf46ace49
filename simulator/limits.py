"""The fake providers' rate limits: per model (requests per minute and day, tokens per minute, over
a "minute" of any length, with the rate-limit headers the real services send) and per provider
(an undeclared cap on all of one wire format's models together)."""
from __future__ import annotations

from collections import deque


class ModelLimits:
    """Sliding-window limits for one model (requests/min, requests/day, tokens/min); `window` is
    the length of the "minute" (shortened in tests)."""

    def __init__(self, rpm: int | None = None, rpd: int | None = None, tpm: int | None = None,
                 window: float = 60.0):
        self.rpm, self.rpd, self.tpm = rpm, rpd, tpm
        self.window = window
        self.requests: deque[float] = deque()
        self.day: deque[float] = deque()
        self.tokens: deque[tuple[float, int]] = deque()

    def _prune(self, now: float) -> None:
        while self.requests and self.requests[0] <= now - self.window:
            self.requests.popleft()
        while self.day and self.day[0] <= now - 86400:
            self.day.popleft()
        while self.tokens and self.tokens[0][0] <= now - self.window:
            self.tokens.popleft()

    def admit(self, tokens: int, now: float) -> float:
        """0 when admitted (and counted), else seconds until it would be."""
        self._prune(now)
        waits = [0.0]
        if self.rpm is not None and len(self.requests) >= self.rpm:
            waits.append(self.requests[0] + self.window - now)
        if self.rpd is not None and len(self.day) >= self.rpd:
            waits.append(self.day[0] + 86400 - now)
        used = sum(t for _, t in self.tokens)
        if self.tpm is not None and used + tokens > self.tpm and self.tokens:
            waits.append(self.tokens[0][0] + self.window - now)
        wait = max(waits)
        if wait > 0:
            return wait
        self.requests.append(now)
        self.day.append(now)
        self.tokens.append((now, tokens))
        return 0.0

    def headers(self, style: str, now: float) -> dict[str, str]:
        self._prune(now)
        used = sum(t for _, t in self.tokens)
        day_left = (self.rpd - len(self.day)) if self.rpd is not None else 14400 - len(self.day)
        tok_limit = self.tpm if self.tpm is not None else 1_000_000
        # Resets say when the window is whole again, as the providers document them.
        tok_reset = (self.tokens[-1][0] + self.window - now) if self.tokens else 0.0
        day_reset = (self.day[-1] + 86400 - now) if self.day else 0.0
        if style == "groq":
            return {"x-ratelimit-limit-requests": str(self.rpd or 14400),
                    "x-ratelimit-remaining-requests": str(max(0, day_left)),
                    "x-ratelimit-reset-requests": _duration(day_reset),
                    "x-ratelimit-limit-tokens": str(tok_limit),
                    "x-ratelimit-remaining-tokens": str(max(0, tok_limit - used)),
                    "x-ratelimit-reset-tokens": _duration(tok_reset)}
        return {"x-ratelimit-limit-requests-day": str(self.rpd or 14400),
                "x-ratelimit-remaining-requests-day": str(max(0, day_left)),
                "x-ratelimit-reset-requests-day": f"{day_reset:.6f}",
                "x-ratelimit-limit-tokens-minute": str(tok_limit),
                "x-ratelimit-remaining-tokens-minute": str(max(0, tok_limit - used)),
                "x-ratelimit-reset-tokens-minute": f"{tok_reset:.6f}"}


class SharedLimit:
    """One provider's undeclared limit: `requests` per `window` seconds across all its models."""

    def __init__(self, requests: int, window: float):
        self.requests, self.window = requests, window
        self.admitted: deque[float] = deque()

    def admit(self, now: float) -> float:
        while self.admitted and self.admitted[0] <= now - self.window:
            self.admitted.popleft()
        if len(self.admitted) >= self.requests:
            return self.admitted[len(self.admitted) - self.requests] + self.window - now
        self.admitted.append(now)
        return 0.0


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = (f"{int(hours)}h" if hours else "") + (f"{int(minutes)}m" if minutes or hours else "")
    return text + f"{secs:.2f}s"
