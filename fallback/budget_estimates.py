"""The statistics completion budgets are chosen with (fallback/budgets.py), as pure functions of
the answers recorded: (completion tokens, cut off) pairs, a cut-off answer kept as
`truncated_factor` x the budget it was sent (it needed more than that budget: a censored sample)."""
from __future__ import annotations

import bisect
import math
from typing import Callable

Answers = list[tuple[int, bool]]


def round_up(tokens: float) -> int:
    """To the next multiple of 64 tokens."""
    return int(math.ceil(tokens / 64) * 64)


def kaplan_meier(data: Answers, truncated_factor: float) -> list[tuple[float, float]]:
    """(tokens, share of the answers that fit in them) at each finished answer's size."""
    # a cut-off answer is kept as factor x its budget; its budget is where it left
    points = sorted((t / truncated_factor if cut else t, not cut) for t, cut in data)
    steps: list[tuple[float, float]] = []
    survive, at_risk = 1.0, len(points)
    for tokens, finished in points:
        if finished:
            survive *= 1 - 1 / at_risk
            steps.append((tokens, 1 - survive))
        at_risk -= 1
    return steps


def share_fitting(data: Answers, truncated_factor: float) -> Callable[[float], float]:
    """The share of the answers that fit a budget: the Kaplan-Meier estimate, where a cut-off
    answer only says it needed more than the budget it was sent (a cut-off at 1,930 tokens says
    nothing about 2,023)."""
    steps = kaplan_meier(data, truncated_factor)
    keys = [tokens for tokens, _ in steps]

    def fits(budget: float) -> float:
        index = bisect.bisect_right(keys, budget)
        return steps[index - 1][1] if index else 0.0
    return fits


def answers_alike(own: Answers, others: Answers, level: float) -> bool:
    """Whether two records' finished answers could come from one distribution: the two-sample
    Kolmogorov-Smirnov statistic below its critical value at `level` (c(a) = sqrt(-ln(a / 2) / 2),
    asymptotic). Written out: scipy.stats' import costs the server a second for one statistic."""
    mine = sorted(t for t, cut in own if not cut)
    theirs = sorted(t for t, cut in others if not cut)
    if not mine or not theirs:
        return False
    n, m = len(mine), len(theirs)
    largest = max(abs(bisect.bisect_right(mine, x) / n - bisect.bisect_right(theirs, x) / m) for x in mine + theirs)
    return largest <= math.sqrt(-math.log(level / 2) / 2) * math.sqrt((n + m) / (n * m))


def min_charge_budget(tokens: list[int], prompt: float, high: int) -> float:
    """The budget that minimises the expected tokens charged per finished answer: with the answers
    sorted, the k-th of n fits an answer with probability k / (n + 1), and a cut-off answer is
    charged and asked again; the configured budget `high` (never cut off, by assumption) is a
    candidate too."""
    ordered = sorted(tokens)
    n = len(ordered)
    best, charge = float(high), prompt + high
    for k, needed in enumerate(ordered, start=1):
        expected = (prompt + round_up(needed)) * (n + 1) / k
        if needed < high and expected < charge:
            best, charge = needed, expected
    return best


def percentile_budget(data: Answers, high: int, percentile: float, margin: float, truncated_factor: float) -> float:
    """`percentile` of the answers plus `margin`. A cut-off answer counts as needing more than the
    budget it was sent (Kaplan-Meier), not as its assumed `truncated_factor` x that: one answer cut
    off at 2,048 among a sibling's 20 must not lift a new model's budget to 3,400. When the
    cut-offs leave the percentile unknown (it lies beyond them), the largest budget an answer was
    cut off at stands for it. A model's own cut-offs raise its budget at once by other means
    (`CompletionBudgets.observe`)."""
    share = percentile / 100
    fitted = next((tokens for tokens, fits in kaplan_meier(data, truncated_factor) if fits >= share), None)
    typical = fitted or max((t / truncated_factor if cut else t for t, cut in data), default=high)
    return typical * (1 + margin)
