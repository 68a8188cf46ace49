"""The fallback decision table: what a failure of each category makes the router do.

Read `DECISIONS` as data. Actions:

* `retry`         - keep the model in rotation and retry it after a jittered backoff; the sample in
                    hand goes on to the next candidate, because one sample never tries the same
                    (provider, model) twice.
* `next_model`    - cool the model down and move on to the next model.
* `next_provider` - cool down (or disable) the whole provider and move on to the next provider.
* `give_up`       - stop working on this sample (the request itself is the problem).
* `stop`          - stop: nothing the router can do will help (a fault in our own code).

Critical rules act at once. Non-critical rules act as `retry` until the model has failed
`switch_after` times in a row (3 by default), then as written. Cooldowns come from the failure's
own wait hint when it has one, otherwise from the named entry of `engine.cooldowns`; `DISABLE`
means "until the provider's configuration changes".
"""
from __future__ import annotations

import enum
import math
import random
from dataclasses import dataclass

from errors import Category, Failure, Scope
from config.providers import DEFAULT_COOLDOWNS, EngineConfig


class Action(str, enum.Enum):
    RETRY = "retry"
    NEXT_MODEL = "next_model"
    NEXT_PROVIDER = "next_provider"
    GIVE_UP = "give_up"
    STOP = "stop"


DISABLE = "disable"


@dataclass(frozen=True)
class Rule:
    action: Action
    critical: bool              # act at once, or only after `switch_after` failures in a row
    cooldown: str | None        # engine.cooldowns key, DISABLE, or None for no cooldown
    give_up_after: int | None = None   # failures of this category in one sample before giving up


C, A = Category, Action
DECISIONS: dict[Category, Rule] = {
    C.AUTHENTICATION: Rule(A.NEXT_PROVIDER, critical=True, cooldown=DISABLE),
    C.CONNECTION_ERROR: Rule(A.NEXT_PROVIDER, critical=True, cooldown="connection_error"),
    C.RATE_LIMIT: Rule(A.NEXT_MODEL, critical=True, cooldown="rate_limit"),
    C.QUOTA_EXHAUSTED: Rule(A.NEXT_MODEL, critical=True, cooldown="quota_exhausted"),
    C.MODEL_UNAVAILABLE: Rule(A.NEXT_MODEL, critical=True, cooldown="model_unavailable"),
    C.TIMEOUT: Rule(A.NEXT_MODEL, critical=True, cooldown="timeout"),
    C.SERVER_ERROR: Rule(A.NEXT_MODEL, critical=True, cooldown="server_error"),
    C.BAD_REQUEST: Rule(A.NEXT_MODEL, critical=False, cooldown="bad_request", give_up_after=3),
    C.INVALID_OUTPUT: Rule(A.NEXT_MODEL, critical=False, cooldown="invalid_output", give_up_after=3),
    C.UNKNOWN: Rule(A.NEXT_MODEL, critical=False, cooldown="unknown"),
}

# Finer rules for a failure's reason, where it changes the decision.
REASON_DECISIONS: dict[str, Rule] = {
    "model_gone": Rule(A.NEXT_MODEL, critical=True, cooldown="model_gone"),            # 404, decommissioned
    "request_too_large": Rule(A.NEXT_MODEL, critical=True, cooldown="bad_request"),    # 413: not again here
    "context_length": Rule(A.NEXT_MODEL, critical=True, cooldown="bad_request"),
    "internal": Rule(A.STOP, critical=True, cooldown=None),                             # our own bug
    # An answer cut off below the configured budget: the learned budget's doing (it is raised), not a
    # failing model, so no backoff or cooldown, and not counted in a row. The router names it so only
    # below the ceiling: cut off at the configured budget, it is an invalid output like any other.
    "truncated": Rule(A.NEXT_MODEL, critical=True, cooldown=None, give_up_after=3),
}
del C, A

@dataclass(frozen=True)
class Decision:
    action: Action
    scope: Scope
    cooldown_seconds: float | None   # None: disable until the configuration changes
    switched: bool                   # the target is taken out of rotation (not just backing off)
    rule: Rule


class Policy:
    """Applies the decision table with the engine's cooldowns and backoff settings."""

    def __init__(self, engine: EngineConfig, rng: random.Random | None = None):
        self.cooldowns = {**DEFAULT_COOLDOWNS, **engine.cooldowns}
        self.max_wait_hint = engine.max_wait_hint_seconds
        self.switch_after = engine.switch_after
        self.backoff_base = engine.backoff.base_seconds
        self.backoff_max = engine.backoff.max_seconds
        self.rng = rng or random.Random()

    def unusable_hint(self, hint: float | None) -> bool:
        """No hint, or one that cannot be meant: not finite, negative or beyond `max_wait_hint_seconds`."""
        return hint is None or not math.isfinite(hint) or hint < 0 or hint > self.max_wait_hint

    @staticmethod
    def rule_for(failure: Failure) -> Rule:
        return REASON_DECISIONS.get(failure.reason or "", DECISIONS[failure.category])

    def backoff(self, consecutive: int) -> float:
        """Exponential backoff with jitter: a random point in the upper half of base * 2^(n-1)."""
        ceiling = min(self.backoff_max, self.backoff_base * (2 ** max(0, consecutive - 1)))
        return ceiling * self.rng.uniform(0.5, 1.0)

    def decide(self, failure: Failure, consecutive: int, in_sample: int) -> Decision:
        """`consecutive`: this model's failures in a row, this one included.
        `in_sample`: failures of this category in the current sample, this one included."""
        rule = self.rule_for(failure)
        scope = failure.scope if rule.action != Action.NEXT_PROVIDER else Scope.PROVIDER
        if not rule.critical and consecutive < self.switch_after:
            decision = Decision(Action.RETRY, Scope.MODEL, self.backoff(consecutive), False, rule)
        elif rule.cooldown == DISABLE:
            decision = Decision(rule.action, scope, None, True, rule)
        else:
            default = self.cooldowns.get(rule.cooldown, 0.0) if rule.cooldown else 0.0
            seconds = default if self.unusable_hint(failure.wait_seconds) else failure.wait_seconds
            decision = Decision(rule.action, scope, seconds, True, rule)
        if rule.give_up_after is not None and in_sample >= rule.give_up_after and decision.action != Action.STOP:
            decision = Decision(Action.GIVE_UP, decision.scope, decision.cooldown_seconds, decision.switched, rule)
        return decision
