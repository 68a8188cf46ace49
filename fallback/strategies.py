"""Routing strategies: the order in which one unit of work tries its candidate (provider, model) pairs.

The router plans the candidates (the configured order, or a caller's own `models` list) and hands
them here; a strategy only reorders them, it never adds or drops one. Each strategy is a small
object in the `STRATEGIES` table, reading what it needs from `Signals`, which the router fills from
the configuration, the metrics and the limiter:

| strategy   | first tries                                                                          |
|------------|--------------------------------------------------------------------------------------|
| `order`    | the planned order as it is (the configured order, or the caller's list)              |
| `cheapest` | the lowest estimated cost of this request at configured prices: prompt estimate ×    |
|            | input price + completion budget × output price                                       |
| `fastest`  | the lowest observed latency (recent successes); an untried model is assumed as fast  |
|            | as the median tried one and goes before a tried one of equal estimate, so it is tried |
|            | once and measured instead of starved                                                 |
| `spread`   | a provider drawn at random, weighted by the requests its models' budgets still admit |
|            | (cooling or disabled models count nothing; a budget the provider's models share caps |
|            | their sum), so load follows the remaining budget; a model without limits makes its   |
|            | provider unlimited: such providers go first, shuffled                                |

Ties keep the planned order (sorts are stable), so `cheapest` among free local models or `fastest`
before anything was measured is `order`. Written here rather than with a library: routing libraries
(LiteLLM's Router) bring their own clients and limiter; this is a sort over a few pairs.
"""
from __future__ import annotations

import math
import random
import statistics
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

from config.providers import STRATEGY_NAMES

Pair = tuple[str, str]


@dataclass
class Signals:
    """What strategies may read about each candidate, for one unit of work."""

    cost: Callable[[Pair], float]               # estimated USD of this request on the pair
    latency: Callable[[Pair], float | None]     # observed seconds of a success (None: not measured yet)
    headroom: Callable[[Pair], float]           # requests its budget admits now (inf: unlimited; 0: unusable)
    rng: random.Random = field(default_factory=random.Random)
    # requests a budget shared by all of a provider's models admits now (inf: none is known)
    shared_headroom: Callable[[str], float] = lambda provider: math.inf


class Strategy(Protocol):
    name: str

    def order(self, pairs: Sequence[Pair], signals: Signals) -> list[Pair]:
        """The same pairs, in the order to try them."""


class InOrder:
    name = "order"

    def order(self, pairs: Sequence[Pair], signals: Signals) -> list[Pair]:
        return list(pairs)


class Cheapest:
    name = "cheapest"

    def order(self, pairs: Sequence[Pair], signals: Signals) -> list[Pair]:
        return sorted(pairs, key=signals.cost)


class Fastest:
    name = "fastest"

    def order(self, pairs: Sequence[Pair], signals: Signals) -> list[Pair]:
        observed = {pair: signals.latency(pair) for pair in pairs}
        known = [seconds for seconds in observed.values() if seconds is not None]
        prior = statistics.median(known) if known else 0.0

        def key(pair: Pair) -> tuple[float, int]:
            seconds = observed[pair]
            return (prior, 0) if seconds is None else (seconds, 1)

        return sorted(pairs, key=key)


class Spread:
    name = "spread"

    def order(self, pairs: Sequence[Pair], signals: Signals) -> list[Pair]:
        groups: dict[str, list[Pair]] = {}
        for pair in pairs:
            groups.setdefault(pair[0], []).append(pair)
        weights = {name: min(sum(signals.headroom(pair) for pair in group), signals.shared_headroom(name))
                   for name, group in groups.items()}
        providers = draw_weighted(list(groups), weights, signals.rng)
        return [pair for name in providers for pair in groups[name]]


def draw_weighted(names: list[str], weights: dict[str, float], rng: random.Random) -> list[str]:
    """All `names`, drawn one by one without replacement with probability proportional to weight.
    Unlimited (inf) ones come first, drawn evenly among themselves; weightless ones last, in order."""
    unlimited = [n for n in names if math.isinf(weights[n])]
    rng.shuffle(unlimited)
    finite = [n for n in names if not math.isinf(weights[n]) and weights[n] > 0]
    empty = [n for n in names if not math.isinf(weights[n]) and weights[n] <= 0]
    drawn: list[str] = []
    while finite:
        total = sum(weights[n] for n in finite)
        point = rng.random() * total
        for name in finite:
            point -= weights[name]
            if point < 0:
                break
        finite.remove(name)
        drawn.append(name)
    return unlimited + drawn + empty


STRATEGIES: dict[str, Strategy] = {s.name: s for s in (InOrder(), Cheapest(), Fastest(), Spread())}
assert tuple(STRATEGIES) == STRATEGY_NAMES, "config.providers.STRATEGY_NAMES must list every strategy"


def arrange(groups: Sequence[Sequence[Pair]], strategy: str, signals: Signals) -> list[Pair]:
    """The groups in their order, each ordered by `strategy` (a requested model stays first, a
    requested provider's models ahead of the others': the router makes those their own groups)."""
    chosen = STRATEGIES[strategy]
    return [pair for group in groups if group for pair in chosen.order(group, signals)]
