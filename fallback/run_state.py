"""The state of one routed run (one unit of work): its plan, what it tried, its attempts and switches."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

from errors import Failure
from fallback.metrics import SwitchEvent
from fallback.outcomes import AttemptRecord, Pair


@dataclass
class Run:
    plan: list[Pair]
    deadline: float
    cancel: threading.Event | None
    max_wait: float = 0.0
    prompt_tokens: int = 0
    pace_wait: float = 0.0            # how long to wait when only budget (pacing) holds every candidate
    tried: set[Pair] = field(default_factory=set)
    skip_providers: set[str] = field(default_factory=set)
    per_category: dict[str, int] = field(default_factory=dict)
    capacity_failures: dict[str, int] = field(default_factory=dict)   # per provider, this sample
    attempts: list[AttemptRecord] = field(default_factory=list)
    switches: list[SwitchEvent] = field(default_factory=list)
    previous: Pair | None = None
    budget: int = 0                   # the completion budget of the attempt under way
    pending: Failure | None = None
    last_failure: Failure | None = None
