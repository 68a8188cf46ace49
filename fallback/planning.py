"""Which (provider, model) pairs a run tries, in what order, and what each request carries: part
of `Router` (fallback.router).

Order: the requested model, the rest of its provider's list, then the other providers' lists in
`engine.provider_order` (then any other declared provider), or exactly the caller's own `models`
list; a strategy (`fallback/strategies.py`: order, cheapest, fastest, spread) may reorder them,
reading the signals built here (cost at the budgets sent, observed latency, headroom in the
limiter's windows). The completion budget sent with each request is learned (`fallback.budgets`).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

from config.providers import ModelConfig
from fallback.budgets import Window
from fallback.health import Blocked
from fallback.windows import WINDOW_NAMES
from fallback.outcomes import Pair
from fallback.strategies import Signals, arrange


class Planning:
    """Part of `Router` (it uses the router's `engine`, `providers`, `budgets`, `limiter`, `health`,
    `metrics` and `rng`)."""

    def provider_sequence(self, first: str | None) -> list[str]:
        start = first or self.engine.default_provider
        ordered = [start] + [p for p in self.engine.provider_order if p != start]
        return ordered + [p for p in self.providers if p not in ordered]

    def plan(self, provider: str | None = None, model: str | None = None) -> list[Pair]:
        pairs: list[Pair] = []
        for name in self.provider_sequence(provider):
            models = [m.id for m in self.providers[name].config.models]
            if name == (provider or self.engine.default_provider) and model:
                models = [model] + [m for m in models if m != model]
            pairs.extend((name, m) for m in models)
        return pairs

    def completion_budget(self, provider: str, model: ModelConfig, prompt_tokens: int | None = None) -> int:
        """The `max_completion_tokens` to send with a prompt of `prompt_tokens` (None: a typical
        one): learned from the model's answers, within its bounds, sized so that whole requests
        fill the token window a provider charging the budget up front counts it against."""
        config = self.providers[provider].config
        return self.budgets.budget(provider, model.id, config.completion_floor(model), config.completion_budget(model),
                                   self._charged_window(provider, model), prompt_tokens)

    def budget_report(self, provider: str, model: ModelConfig) -> dict[str, Any]:
        """The model's completion budget as sent now for a typical prompt, and what it was learned from."""
        config = self.providers[provider].config
        return self.budgets.report(provider, model.id, config.completion_floor(model), config.completion_budget(model),
                                   self._charged_window(provider, model))

    def _charged_window(self, provider: str, model: ModelConfig) -> Window | None:
        """The minute token window charged `prompt + budget` up front (reserved accounting), if any."""
        if self.providers[provider].config.token_accounting != "reserved":
            return None
        limits = self.limiter.steady_limits(provider, model.id)
        return Window(limits["tpm"], limits.get("rpm")) if limits.get("tpm") else None

    def candidates(self, *, provider: str | None = None, model: str | None = None,
                   models: Sequence[Pair] | None = None, strategy: str | None = None,
                   prompt_tokens: int = 0) -> list[Pair]:
        """The pairs one run tries, in order: `models` exactly (nothing appended), else the plan;
        ordered by `strategy` (default `engine.strategy`), a requested model kept first and a
        requested provider's models ahead of the others."""
        if models:
            groups = [list(dict.fromkeys(models))]
        else:
            pairs = self.plan(provider, model)
            lead = provider or (self.engine.default_provider if model else None)
            pinned = pairs[:1] if model else []
            own = [p for p in pairs[len(pinned):] if p[0] == lead]
            groups = [pinned, own, [p for p in pairs[len(pinned):] if p[0] != lead]]
        return arrange(groups, strategy or self.engine.strategy, self._signals(prompt_tokens))

    def _signals(self, prompt_tokens: int) -> Signals:
        def model_of(pair: Pair) -> ModelConfig | None:
            return self.providers[pair[0]].config.model(pair[1])

        def cost(pair: Pair) -> float:
            model = model_of(pair)
            if model is None:
                return math.inf
            return model.price.cost(self._prompt(pair[0], prompt_tokens), self.completion_budget(pair[0], model))

        def admits(windows: dict[str, dict[str, float]], tokens: int) -> float:
            """Requests these windows admit now, each costing one request and `tokens` (inf: no window)."""
            counts = [window["remaining"] / (1 if WINDOW_NAMES.get(name, ("requests",))[0] == "requests" else tokens)
                      for name, window in windows.items()]
            return max(0.0, min(counts)) if counts else math.inf

        def request_tokens(provider: str, model: ModelConfig) -> int:
            return max(1, self._prompt(provider, prompt_tokens) + self.completion_budget(provider, model))

        def headroom(pair: Pair) -> float:
            model = model_of(pair)
            if model is None or not self.providers[pair[0]].configured or self.blocked(pair) is not None:
                return 0.0
            return admits(self.limiter.snapshot(*pair), request_tokens(pair[0], model))

        def shared_headroom(provider: str) -> float:
            models = self.providers[provider].config.models
            tokens = min((request_tokens(provider, m) for m in models), default=1)
            return admits(self.limiter.shared_snapshot(provider), tokens)

        return Signals(cost=cost, latency=lambda pair: self.metrics.success_latency(*pair), headroom=headroom,
                       rng=self.rng, shared_headroom=shared_headroom)

    def blocked(self, pair: Pair) -> Blocked | None:
        client = self.providers[pair[0]]
        return self.health.blocked(pair[0], pair[1], client.key_fingerprint)

    def _prompt(self, provider: str, estimated: int) -> int:
        """The prompt's estimated tokens, corrected by what the provider's answers reported."""
        return int(estimated * self.budgets.prompt_scale(provider) + 0.5)
