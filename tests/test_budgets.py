"""Completion budgets (fallback/budgets.py): the budget that minimises the expected charge per
finished answer, the provider's pool as a new model's prior, cut-offs that raise the budget at
once only when the data did not predict them."""
from __future__ import annotations

import random
from statistics import NormalDist

from config.providers import PacingConfig
from fallback.budgets import CompletionBudgets

PROMPT = 370
ANSWERS = NormalDist(1800, 120)


def learned(budgets: CompletionBudgets, provider: str, model: str, count: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    budgets.observe_prompt(provider, PROMPT, PROMPT)
    for _ in range(count):
        budgets.observe(provider, model, int(rng.gauss(1800, 120)), False, 8192)


def expected_charge(budget: int) -> float:
    """Tokens charged per finished answer when a cut-off answer is charged and asked again."""
    return (PROMPT + budget) / ANSWERS.cdf(budget)


def test_min_charge_sends_less_than_p95_plus_margin_and_costs_less_per_answer():
    charge, percentile = CompletionBudgets(PacingConfig()), CompletionBudgets(PacingConfig(budget_method="percentile"))
    for budgets in (charge, percentile):
        learned(budgets, "cerebras", "m", 200)
    by_charge = charge.budget("cerebras", "m", 512, 8192)
    by_percentile = percentile.budget("cerebras", "m", 512, 8192)
    assert by_percentile >= 2176                      # p95 (~1,997) x 1.1, rounded up to 64
    assert 1920 <= by_charge < by_percentile          # accepts a few cut-offs instead
    assert expected_charge(by_charge) < 0.97 * expected_charge(by_percentile)
    assert expected_charge(by_charge) < 1.02 * min(expected_charge(b) for b in range(1800, 2600))


def test_constant_answers_get_a_budget_just_above_them():
    budgets = CompletionBudgets(PacingConfig())
    for _ in range(60):
        budgets.observe("groq", "m", 900, False, 4096)
    assert budgets.budget("groq", "m", 256, 4096) == 960   # 900 rounded up to 64: never cut off


def test_a_new_model_starts_from_its_siblings_answers():
    budgets = CompletionBudgets(PacingConfig())
    assert budgets.budget("cerebras", "new", 512, 8192) == 8192      # nothing known yet: configured
    learned(budgets, "cerebras", "sibling", 60)
    assert 1920 <= budgets.budget("cerebras", "new", 512, 8192) <= 2176
    assert budgets.budget("groq", "new", 512, 8192) == 8192          # another provider's pool is its own
    assert budgets.report("cerebras", "new", 512, 8192)["learned"]


def test_a_predicted_cut_off_is_a_sample_two_in_a_row_raise_the_budget_at_once():
    budgets = CompletionBudgets(PacingConfig())
    learned(budgets, "cerebras", "m", 200)
    before = budgets.budget("cerebras", "m", 512, 8192)
    budgets.observe("cerebras", "m", before, True, before)            # the tail min_charge accepted
    assert budgets.budget("cerebras", "m", 512, 8192) <= before + 64
    budgets.observe("cerebras", "m", before, True, before)            # again: answers got longer
    assert budgets.budget("cerebras", "m", 512, 8192) >= int(before * 1.5)
    assert budgets.report("cerebras", "m", 512, 8192)["truncated"] == 2


def test_with_few_answers_a_cut_off_above_all_of_them_raises_the_budget_at_once():
    budgets = CompletionBudgets(PacingConfig(budget_min_samples=3))
    for _ in range(3):
        budgets.observe("groq", "m", 1000, False, 4096)
    assert budgets.budget("groq", "m", 256, 4096) == 1152            # percentile rule: 1,000 x 1.1, up to 64
    budgets.observe("groq", "m", 1152, True, 1152)
    assert budgets.budget("groq", "m", 256, 4096) >= 1728
