"""Completion budgets (fallback/budgets.py): the budget that minimises the expected charge per
finished answer, the provider's pool as a new model's prior, cut-offs that raise the budget at
once only when the data did not predict them, budgets that fill an up-front-charged token window
with whole requests."""
from __future__ import annotations

import math
import random
from statistics import NormalDist

from config.providers import PacingConfig
from fallback.budgets import CompletionBudgets, Window

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


def test_a_predicted_cut_off_is_a_sample_a_run_the_data_makes_unlikely_raises_the_budget_at_once():
    budgets = CompletionBudgets(PacingConfig())
    learned(budgets, "cerebras", "m", 200)
    before = budgets.budget("cerebras", "m", 512, 8192)
    missed = sum(1 for t, _ in budgets._data("cerebras", "m") if t > before) / 200
    assert 0.01 < missed < 0.03                                       # about 1 answer in 50 does not fit
    for _ in range(2):                                                # q^2 ~ 4e-4: the tail min_charge accepted
        budgets.observe("cerebras", "m", before, True, before)
        assert budgets.budget("cerebras", "m", 512, 8192) <= before + 64
    budgets.observe("cerebras", "m", before, True, before)            # q^3 < 1e-4: answers got longer
    assert budgets.budget("cerebras", "m", 512, 8192) >= int(before * 1.5)
    assert budgets.report("cerebras", "m", 512, 8192)["truncated"] == 3


def test_cut_offs_above_every_answer_raise_the_budget_on_the_third_in_a_row():
    """60 answers of 900 tokens and a budget of 960: one cut-off may be a tail the record has not
    shown yet (1 in 61 at most); three in a row (< 1 in 10,000 that way) say the answers changed."""
    budgets = CompletionBudgets(PacingConfig())
    for _ in range(60):
        budgets.observe("groq", "m", 900, False, 4096)
    assert budgets.budget("groq", "m", 256, 4096) == 960
    for _ in range(2):
        budgets.observe("groq", "m", 960, True, 960)
        assert budgets.budget("groq", "m", 256, 4096) < 1440
    budgets.observe("groq", "m", 960, True, 960)
    assert budgets.budget("groq", "m", 256, 4096) >= 1440


def test_with_few_answers_a_cut_off_above_all_of_them_raises_the_budget_at_once():
    budgets = CompletionBudgets(PacingConfig(budget_min_samples=3))
    for _ in range(3):
        budgets.observe("groq", "m", 1000, False, 4096)
    assert budgets.budget("groq", "m", 256, 4096) == 1152            # percentile rule: 1,000 x 1.1, up to 64
    budgets.observe("groq", "m", 1152, True, 1152)
    assert budgets.budget("groq", "m", 256, 4096) >= 1728


def finished_per_window(window: Window, budget: int, prompt: int = PROMPT) -> float:
    """Answers a window of `window.tokens` charged prompt + budget up front finishes: whole requests only."""
    requests = min(window.requests or math.inf, window.tokens // (prompt + budget))
    return requests * ANSWERS.cdf(budget)


def test_a_window_charged_up_front_is_filled_by_whole_requests():
    """60,000 tokens a window at ~2,170 tokens a request: the learned budget (2,048: 24 requests,
    1,896 tokens idle) is cut to 2,023, so 25 fit, when the answers say the extra ~2 % of cut-offs
    cost less than the 25th request brings; each request gets exactly a 25th of the window."""
    budgets = CompletionBudgets(PacingConfig())
    learned(budgets, "cerebras", "m", 200)
    window = Window(60000, 30)
    plain = budgets.budget("cerebras", "m", 512, 2048)
    filled = budgets.budget("cerebras", "m", 512, 2048, window, PROMPT)
    assert 60000 // (PROMPT + plain) == 24 and 60000 // (PROMPT + filled) == 25
    assert finished_per_window(window, filled) > 1.02 * finished_per_window(window, plain)
    for prompt in (360, 370, 420):   # whatever the prompt, a request takes its 25th of the window
        sent = budgets.budget("cerebras", "m", 512, 2048, window, prompt)
        assert 2400 - 8 <= prompt + sent <= 2400 - prompt // 100
    # The request limit caps the window: 10 a window at 150,000 tokens keep the configured budget.
    assert budgets.budget("cerebras", "m", 512, 2048, Window(150000, 10), PROMPT) == 2048


def test_a_budget_is_not_cut_below_what_the_answers_need():
    """Answers of ~1,800 tokens in a window of 40,000: 18 requests at ~1,850 tokens would cut off
    a third of the answers; the budget stays where 16 or 17 requests finish the most answers."""
    budgets = CompletionBudgets(PacingConfig())
    learned(budgets, "cerebras", "m", 200)
    window = Window(40000)
    sent = budgets.budget("cerebras", "m", 512, 8192, window, PROMPT)
    assert 40000 // (PROMPT + sent) in (16, 17) and ANSWERS.cdf(sent) > 0.9
    best = max(finished_per_window(window, int(40000 / n - PROMPT * 1.01)) for n in range(1, 30))
    assert finished_per_window(window, sent) > 0.99 * best


def test_with_few_answers_a_window_budget_is_cut_only_as_far_as_they_show():
    """Below `budget_own_samples` answers the climb to more requests starts from the cautious
    budget's whole requests (p95 x 1.1, widened to its share of the window) and the error term
    stops it within the answers' count: 10 answers only widen it, 30 may take the 25th request
    (2,023 tokens, 1 answer in 50 cut off) but never a 26th (1,930 tokens, 1 in 9)."""
    budgets = CompletionBudgets(PacingConfig())
    learned(budgets, "cerebras", "m", 10)
    cautious = budgets.budget("cerebras", "m", 512, 8192)
    requests = 60000 // (PROMPT + cautious)
    assert budgets.budget("cerebras", "m", 512, 8192, Window(60000, 30), PROMPT) == int(60000 / requests - PROMPT * 1.01)
    counts = []
    for seed in range(20):
        budgets = CompletionBudgets(PacingConfig())
        learned(budgets, "cerebras", "m", 30, seed=seed)
        widened = 60000 // (PROMPT + budgets.budget("cerebras", "m", 512, 8192))
        counts.append(60000 // (PROMPT + budgets.budget("cerebras", "m", 512, 8192, Window(60000, 30), PROMPT)))
        assert widened <= counts[-1] <= 25
    assert counts.count(25) >= 2 and sum(counts) / len(counts) > 23.5, counts


def test_a_model_answering_like_its_siblings_keeps_learning_from_them_past_its_own_50():
    """With 60 answers of its own a model cannot tell a 1-in-50 tail from noise and mostly stays at
    24 requests of 60,000 tokens; with its siblings' 200 answers of the same distribution it takes
    the 25th. Siblings that answer differently (900 or 2,400 tokens) are not counted."""
    def requests(sibling_mean: int | None, seed: int) -> tuple[int, int]:
        budgets = CompletionBudgets(PacingConfig())
        learned(budgets, "cerebras", "m", 60, seed=seed)
        rng = random.Random(seed + 100)
        for _ in range(200 if sibling_mean else 0):
            budgets.observe("cerebras", "sibling", int(rng.gauss(sibling_mean, 120)), False, 8192)
        sent = budgets.budget("cerebras", "m", 512, 2048, Window(60000, 30), PROMPT)
        return len(budgets._data("cerebras", "m")), 60000 // (PROMPT + sent)

    alone = [requests(None, seed)[1] for seed in range(20)]
    alike = [requests(1800, seed) for seed in range(20)]
    assert sum(1 for count, _ in alike if count == 200) >= 18           # a KS test at 1 %: ~1 in 100 told apart
    assert sum(1 for _, n in alike if n == 25) >= 18 > alone.count(25), (alike, alone)
    for mean in (900, 2400):
        assert all(requests(mean, seed)[0] == 60 for seed in range(10))   # its own answers only


def test_a_budget_is_cut_into_the_tail_only_when_the_answers_show_it_pays():
    """One more request is taken only while the answers it would cut off, counted at the top of
    their error, cost less than it brings: with 60 answers a 26th request at 1,930 tokens (1 answer
    in 7 cut off) is never chosen by luck, and the 25th (1 in 50) is once the record is full."""
    def chosen(answers: int) -> list[int]:
        out = []
        for seed in range(20):
            budgets = CompletionBudgets(PacingConfig())
            learned(budgets, "cerebras", "m", answers, seed=seed)
            out.append(60000 // (PROMPT + budgets.budget("cerebras", "m", 512, 2048, Window(60000, 30), PROMPT)))
        return out

    few, full = chosen(60), chosen(200)
    assert set(few) <= {24, 25} and set(full) <= {24, 25}, (few, full)
    assert full.count(25) >= 15 and full.count(25) > few.count(25), (few, full)
