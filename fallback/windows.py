"""The rate limiter's vocabulary: the names of its windows ("tpm" is tokens per minute) and what
it hands out, a `Reservation` or a `Wait`."""
from __future__ import annotations

from dataclasses import dataclass, field

# limit name -> (metric, period)
WINDOW_NAMES: dict[str, tuple[str, str]] = {
    "rpm": ("requests", "minute"), "rph": ("requests", "hour"), "rpd": ("requests", "day"),
    "tpm": ("tokens", "minute"), "tph": ("tokens", "hour"), "tpd": ("tokens", "day"),
}
NAME_OF = {v: k for k, v in WINDOW_NAMES.items()}   # (metric, period) -> limit name


def window_label(name: str) -> str:
    """"tpm" -> "tokens per minute"."""
    metric, period = WINDOW_NAMES.get(name, (name, ""))
    return f"{metric} per {period}" if period else name


class Wait(float):
    """Seconds until a request fits (inf: never), with the windows that hold it back."""

    windows: tuple[str, ...]

    def __new__(cls, seconds: float, windows: tuple[str, ...] = ()) -> "Wait":
        wait = super().__new__(cls, seconds)
        wait.windows = windows
        return wait


@dataclass
class Reservation:
    provider: str
    model: str
    tokens: int
    at: float = 0.0
    # (scope key, token window, seconds per token) charged, to settle to the real usage
    charges: list[tuple[str, str, float]] = field(default_factory=list)
    settled: bool = False
