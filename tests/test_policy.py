"""The decision table and the health board, as data and as behaviour."""
from __future__ import annotations

import random

import pytest

from errors import CATEGORY_SCOPE, Category, Failure, Scope
from fallback.health import HealthBoard
from fallback.policy import DECISIONS, Action, Policy
from config.providers import EngineConfig
from tests.conftest import ManualClock


def failure(category: Category, wait: float | None = None, reason: str | None = None) -> Failure:
    return Failure(category, CATEGORY_SCOPE[category], wait, f"{category.value} happened", reason=reason)


def policy(**engine) -> Policy:
    return Policy(EngineConfig(**engine), random.Random(1))


def test_every_category_has_a_decision():
    assert set(DECISIONS) == set(Category)


CRITICAL = [Category.RATE_LIMIT, Category.MODEL_UNAVAILABLE, Category.TIMEOUT, Category.CONNECTION_ERROR,
            Category.SERVER_ERROR, Category.QUOTA_EXHAUSTED, Category.AUTHENTICATION]


@pytest.mark.parametrize("category", CRITICAL)
def test_critical_categories_switch_at_once(category):
    decision = policy().decide(failure(category), consecutive=1, in_sample=1)
    assert decision.switched and decision.action in (Action.NEXT_MODEL, Action.NEXT_PROVIDER)


@pytest.mark.parametrize("category", [Category.BAD_REQUEST, Category.INVALID_OUTPUT, Category.UNKNOWN])
def test_other_failures_retry_then_switch_after_three_in_a_row(category):
    p = policy(switch_after=3, backoff={"base_seconds": 1, "max_seconds": 30})
    first = p.decide(failure(category), consecutive=1, in_sample=1)
    second = p.decide(failure(category), consecutive=2, in_sample=1)
    third = p.decide(failure(category), consecutive=3, in_sample=1)
    assert first.action == second.action == Action.RETRY and not first.switched
    assert 0.5 <= first.cooldown_seconds <= 1.0 and 1.0 <= second.cooldown_seconds <= 2.0  # jittered backoff
    assert third.action == Action.NEXT_MODEL and third.switched


def test_backoff_is_jittered_and_capped():
    p = policy(backoff={"base_seconds": 1, "max_seconds": 4})
    values = {round(p.backoff(3), 6) for _ in range(20)}
    assert len(values) > 1 and all(2.0 <= v <= 4.0 for v in values)
    assert all(p.backoff(10) <= 4.0 for _ in range(20))


def test_cooldown_comes_from_the_failure_else_configuration():
    p = policy(cooldowns={"rate_limit": 42})
    assert p.decide(failure(Category.RATE_LIMIT, wait=7.5), 1, 1).cooldown_seconds == 7.5
    assert p.decide(failure(Category.RATE_LIMIT), 1, 1).cooldown_seconds == 42


def test_actions_for_special_reasons():
    p = policy()
    assert p.decide(failure(Category.AUTHENTICATION), 1, 1).action == Action.NEXT_PROVIDER
    assert p.decide(failure(Category.AUTHENTICATION), 1, 1).cooldown_seconds is None  # disabled
    assert p.decide(failure(Category.CONNECTION_ERROR), 1, 1).scope == Scope.PROVIDER
    too_large = p.decide(failure(Category.BAD_REQUEST, reason="request_too_large"), 1, 1)
    assert too_large.action == Action.NEXT_MODEL and too_large.switched  # never again on that model
    assert p.decide(failure(Category.UNKNOWN, reason="internal"), 1, 1).action == Action.STOP
    gone = p.decide(failure(Category.MODEL_UNAVAILABLE, reason="model_gone"), 1, 1)
    assert gone.cooldown_seconds == 3600


def test_give_up_on_a_sample_the_providers_keep_rejecting():
    p = policy()
    assert p.decide(failure(Category.BAD_REQUEST), 1, in_sample=2).action != Action.GIVE_UP
    assert p.decide(failure(Category.BAD_REQUEST), 1, in_sample=3).action == Action.GIVE_UP
    assert p.decide(failure(Category.INVALID_OUTPUT), 1, in_sample=3).action == Action.GIVE_UP


def test_a_cooldown_is_never_shortened_and_expires():
    clock = ManualClock()
    board = HealthBoard(clock)
    board.cool("groq", "m", 60, failure(Category.QUOTA_EXHAUSTED), True)
    board.cool("groq", "m", 5, failure(Category.RATE_LIMIT), True)
    blocked = board.blocked("groq", "m", "fp")
    assert blocked.until == pytest.approx(clock() + 60) and blocked.category == "quota_exhausted"
    clock.advance(60)
    assert board.blocked("groq", "m", "fp") is None


def test_a_disabled_provider_returns_when_its_key_changes():
    board = HealthBoard(ManualClock())
    board.disable("groq", "old-key", failure(Category.AUTHENTICATION))
    assert board.blocked("groq", "any-model", "old-key").permanent
    assert board.blocked("groq", "any-model", "new-key") is None


def test_an_answer_cut_off_below_the_configured_budget_moves_on_without_a_pause():
    """Cut off at a learned budget, the budget is to blame (it is raised), not the model: no backoff,
    no cooldown, on to the next model; the sample still gives up after three such failures."""
    p = policy(switch_after=3)
    cut = failure(Category.INVALID_OUTPUT, reason="truncated")
    first = p.decide(cut, consecutive=1, in_sample=1)
    assert first.action == Action.NEXT_MODEL and first.cooldown_seconds == 0
    assert p.decide(cut, consecutive=5, in_sample=3).action == Action.GIVE_UP
    plain = p.decide(failure(Category.INVALID_OUTPUT), consecutive=1, in_sample=1)
    assert plain.cooldown_seconds > 0                      # any other invalid output backs off


def test_the_router_names_a_cut_off_truncated_only_below_the_configured_budget(fake, make_engine):
    """An answer cut off at the configured budget is an invalid output like any other: no learned
    budget to blame, so the model backs off; below it, the sample moves on without a pause."""
    from fallback.router import RoutingError
    from tests.conftest import request

    fake.completion_tokens = 5000
    engine = make_engine(overrides={"providers": {"groq": {"models": [{"id": "g-large", "limits": {}}],
                                                           "max_completion_tokens": 4096}}},
                         env_overrides={"CEREBRAS_API_KEY": ""})
    with pytest.raises(RoutingError):
        engine.generate(request("groq"))                   # cut off at 4,096, the configured budget
    assert engine.health.state("groq", "g-large", engine.providers["groq"].key_fingerprint,
                               engine.router.to_wall)["state"] != "ok"
    fake.completion_tokens = 1000
    learned = make_engine(overrides={"providers": {"groq": {"models": [{"id": "g-large", "limits": {}}],
                                                            "max_completion_tokens": 4096, "min_completion_tokens": 256}}},
                          env_overrides={"CEREBRAS_API_KEY": ""}, pacing={"budget_min_samples": 3})
    for _ in range(3):
        learned.generate(request("groq"))                  # the budget comes down to ~1,152
    fake.completion_tokens = 1500
    with pytest.raises(RoutingError):
        learned.generate(request("groq"))                  # cut off at the learned budget
    assert learned.health.state("groq", "g-large", learned.providers["groq"].key_fingerprint,
                                learned.router.to_wall)["state"] == "ok"
