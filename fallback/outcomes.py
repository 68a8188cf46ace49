"""What a routed run ends with: its value (`Routed`) with every attempt made (`AttemptRecord`) and
switch taken, or a `RoutingError` saying why nothing was produced, one subclass per kind."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from errors import Failure
from fallback.metrics import SwitchEvent
from providers.client import Completion

T = TypeVar("T")
Pair = tuple[str, str]   # (provider, model)


@dataclass
class AttemptRecord:
    provider: str
    model: str
    started_at: str
    latency: float
    outcome: str                      # "success" or "failure"
    category: str | None = None
    message: str | None = None
    action: str | None = None
    cooldown_seconds: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Routed(Generic[T]):
    value: T
    completion: Completion
    attempts: list[AttemptRecord]
    switches: list[SwitchEvent]


class RoutingError(Exception):
    """The run produced nothing. `retry_after`: seconds until something may work (None: unknown).
    `blocked`: every configured candidate and what held it when the run ended (see `Router.report`)."""

    permanent = False

    def __init__(self, message: str, *, attempts: list[AttemptRecord] | None = None,
                 switches: list[SwitchEvent] | None = None, retry_after: float | None = None,
                 last_failure: Failure | None = None, blocked: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.message = message
        self.attempts = attempts or []
        self.switches = switches or []
        self.retry_after = retry_after
        self.last_failure = last_failure
        self.blocked = blocked or []

    @property
    def kind(self) -> str:
        return _KIND[type(self)]


class AllCooling(RoutingError):
    """Every remaining candidate is cooling down or out of budget; `retry_after` says how long."""


class NoRecovery(RoutingError):
    """Nothing can work by waiting: no provider configured, keys rejected, every model gone."""

    permanent = True


class AttemptsExhausted(RoutingError):
    """Every candidate (or `max_attempts` of them) was tried and failed."""


class DeadlineExceeded(RoutingError):
    """The run's time budget ran out."""


class GaveUp(RoutingError):
    """The policy gave up on this unit of work (the request itself is at fault)."""


class Stopped(RoutingError):
    """The policy stopped: retrying elsewhere cannot help."""


class Cancelled(RoutingError):
    """The caller cancelled the run."""


_KIND = {AllCooling: "all_cooling", NoRecovery: "no_recovery", AttemptsExhausted: "exhausted",
         DeadlineExceeded: "deadline", GaveUp: "gave_up", Stopped: "stopped", Cancelled: "cancelled"}
