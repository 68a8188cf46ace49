"""Completion budgets that fit: `max_completion_tokens` learned per model from real answers.

A provider that charges `prompt + max_completion_tokens` up front (Cerebras) counts the whole
budget against its token limits, and every provider's limiter reservation starts from it, so a
budget far above what answers use wastes most of the token window. Each model keeps the
completion tokens of its latest answers (`pacing.budget_samples`), and each provider a pool of
its models' latest answers. The data a budget is learned from is the model's own answers topped up
to `budget_samples` with the provider's pool: unconditionally below `budget_own_samples` answers of
its own (the same prompts go to every model: a new model starts from what its siblings use instead
of spending its first answers at the configured budget), from then on only while its answers and
its siblings' pass a two-sample Kolmogorov-Smirnov test at 1 % (a model answering like its
siblings keeps the record of ~200 answers a 1-in-50 tail needs; a thinking model's longer answers
soon stand alone); at least `budget_min_samples` answers are needed.

`budget_method: min_charge` (default) picks the budget that minimises the expected tokens charged
per finished answer: with the answers sorted, x_(k) fits an answer with probability k / (n + 1)
(the expected share of the distribution below the k-th of n samples), a cut-off answer is charged
and asked again, so the expected charge is (prompt + x_(k)) x (n + 1) / k; the configured budget
(charge prompt + ceiling, never cut off by assumption) is a candidate too. A p95 + 10 % budget
pays ~10 % more than needed on every request to avoid a ~1-in-50 retry; this one pays for the
retries it risks and no more. With fewer than `budget_own_samples` answers the tail cannot be
told apart from noise, so the percentile rule applies (a cut-off answer counted as needing more
than its budget, Kaplan-Meier, not as half as much again: one sibling's cut-off at 2,048 must not
lift a new model's budget to 3,400); `budget_method: percentile` always keeps `budget_percentile` x
`1 + budget_margin`. Either is rounded up to 64 and kept between the configured bounds
(`min_completion_tokens`, `max_completion_tokens`: the configured budget is the ceiling).

**Whole requests per window.** Where the provider charges `prompt + budget` up front against a
steady token window (`Window`: Cerebras' tokens per minute), a window holds `n = floor(tpm / (prompt
+ budget))` requests and the rest of it is never used: at 60,000 tpm a 2,421-token charge fits 24
requests and leaves 1,896 tokens idle. There the budget is chosen per window: starting from the
fewest requests (the configured budget), one more request is taken, its budget `tpm / (n + 1) -
prompt`, while the answers it would newly cut off cost less than the request brings: `(n + 1) x
(F - m) > n x F`, i.e. `m < F / (n + 1)`, with `F` the share of answers that fit the current
budget and `m` the share between the two budgets, counted at the top of its error (`m + (sqrt(m
N) + 1) / N` for N answers), so a 25th request at 60,000 tpm (2,023 tokens, ~1 answer in 50 newly
cut off) is taken once the record shows it, a 26th (1,930 tokens, 1 in 9) never. The shares are
Kaplan-Meier estimates: a cut-off answer only says it needed more than the budget it was sent.
Each request is then sent `tpm / n` minus its own prompt (a margin of 1 % of the prompt for the
estimate's error), so `n` requests fill the window exactly whatever their prompts. Below
`budget_own_samples` answers the climb starts from the whole requests of the budget learned as
above (p95 + 10 %, widened to its share of the window) rather than from the configured one: the
error term lets N answers justify about N requests, so 10 answers only widen it and ~30 may take
the 25th request of 60,000 tokens. While a cut-off raised the budget it is only widened, never cut.

An answer cut off (`finish_reason: length`) is kept as a sample of `budget_truncated_factor` x the
budget (it needed more than the budget: a censored sample). When the answers seem to have got
longer it also raises the budget by `budget_truncated_factor` at once, for the next
`4 x budget_min_samples` answers: under the percentile rule, when the budget was at least every
answer the data held; under min_charge (which accepts a few cut-offs by design), when the model's
latest answers were all cut off and the data made such a run unlikely: `q^k < 1/10,000` for `k`
cut-offs in a row where `q` is the share of the data that did not fit the budget, counted high
(`(misses + 1) / (answers + 1)`: three in a row when 1 answer in 50 or fewer does not fit, even
none of the 50 so far, four at 1 in 20), so the cut-offs a budget accepts by design, or a 1-in-100
answer a record of 50 has not shown yet, do not raise it. (A budget raised by half costs ~7
requests of a window charged up front; an answer cut off, one.)

The prompt's size is estimated offline (characters per token); each provider's answers report
the real count, and `prompt_scale` (a moving average of real / estimated, between 0.5 and 2)
corrects the estimate the limiter reserves.

In PostgreSQL mode (`share(samples)`) the answers are pooled by every server on the database: each
answer's completion tokens are also appended to `budget_samples` (`storage.shared_budgets`), and
the other servers' are read back, incrementally, at most every `refresh_seconds` (1 s) by the
first budget asked for after that, so all servers learn from one sample. Floors after a cut-off,
prompt scales and counts of cut-offs stay per server. If the database cannot be reached, the
budgets go on with what this server knows (logged once).
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from config.providers import PacingConfig
from fallback.budget_estimates import answers_alike, min_charge_budget, percentile_budget, round_up, share_fitting
from fallback.metrics import percentile
from storage.outage import Outage
from storage.shared_budgets import SharedBudgetSamples

log = logging.getLogger("fallback")

PRUNE_EVERY = 64    # this server's shared appends between two prunes of a model's old samples


SHIFT_EVIDENCE = 1e-4   # a run of cut-offs less likely than this under the data: the answers got longer
PROMPT_MARGIN = 0.01    # of a request's prompt estimate, kept free of a window's share (estimate error)
ALIKE_LEVEL = 0.01      # a model's answers and its siblings' differ when a KS test says so at this level


@dataclass(frozen=True)
class Window:
    """A steady window the provider charges `prompt + budget` against when a request arrives:
    `tokens` per window, at most `requests` requests per window (None: no request limit)."""

    tokens: float
    requests: float | None = None


@dataclass
class _Model:
    used: deque = field(default_factory=deque)   # (completion tokens, cut off)
    floor: int = 0          # raised after a truncation: the budget stays at least this...
    floor_answers: int = 0  # ...for this many more answers
    truncated: int = 0


class CompletionBudgets:
    def __init__(self, pacing: PacingConfig):
        self.pacing = pacing
        self._lock = threading.Lock()
        self._models: dict[tuple[str, str], _Model] = {}
        self._prompt_scale: dict[str, float] = {}
        self._prompt_tokens: dict[str, float] = {}
        self._pool: dict[str, deque] = {}
        self._answers = 0   # answers remembered so far (keys `_alike_cache`)
        self._alike_cache: dict[tuple[str, str], tuple[int, bool]] = {}
        self._shared: SharedBudgetSamples | None = None
        self._refresh = 1.0
        self._horizon = 0
        self._fetched = float("-inf")
        self._fetch_lock = threading.Lock()
        self._appended = 0
        self._outage = Outage(log, "the shared completion budgets' samples")

    # -- shared with other servers (PostgreSQL mode) ----------------------------------------

    def share(self, samples: SharedBudgetSamples, refresh_seconds: float = 1.0) -> None:
        """Append this server's answers to `samples` and learn from the other servers' too."""
        self._shared, self._refresh = samples, refresh_seconds
        self._fetched = float("-inf")
        self._catch_up()

    def _catch_up(self) -> None:
        """Fold in the other servers' answers, at most every `refresh_seconds`, by one thread
        (the others go on with what is known)."""
        if self._shared is None or time.monotonic() - self._fetched < self._refresh:
            return
        if not self._fetch_lock.acquire(blocking=False):
            return
        try:
            if time.monotonic() - self._fetched < self._refresh:
                return
            self._fetched = time.monotonic()
            try:
                horizon, rows = self._shared.since(self._horizon)
            except Exception as exc:  # noqa: BLE001 - learn from this server's answers meanwhile
                self._outage.failed(exc, "reading the other servers' answers")
                return
            self._outage.worked()
            with self._lock:
                for row in rows:
                    self._remember(row.provider, row.model, (row.tokens, row.cut_off))
            self._horizon = horizon
        finally:
            self._fetch_lock.release()

    def _publish(self, provider: str, model: str, sample: tuple[int, bool]) -> None:
        if self._shared is None:
            return
        try:
            self._shared.append(provider, model, *sample)
            self._appended += 1
            if self._appended % PRUNE_EVERY == 0:
                self._shared.prune(provider, model, keep=2 * self.pacing.budget_samples)
        except Exception as exc:  # noqa: BLE001 - this server has it; the others will not see it
            self._outage.failed(exc, "sharing an answer")
        else:
            self._outage.worked()

    def _remember(self, provider: str, model: str, sample: tuple[int, bool]) -> None:
        """Under the lock: one answer the budgets learn from (the model's and its provider's pool)."""
        self._model(provider, model).used.append(sample)
        self._answers += 1
        self._pool.setdefault(provider, deque(maxlen=2 * self.pacing.budget_samples)).append((model, *sample))

    # -- budgets ---------------------------------------------------------------------------

    def _model(self, provider: str, model: str) -> _Model:
        return self._models.setdefault((provider, model), _Model(deque(maxlen=self.pacing.budget_samples)))

    def budget(self, provider: str, model: str, low: int, high: int, window: Window | None = None,
               prompt: int | None = None) -> int:
        """The budget to send now, between `low` and `high` (the configured budget); with the
        `window` the provider charges it against up front, sized so whole requests fill it, for a
        request of `prompt` tokens (None: the provider's typical prompt)."""
        self._catch_up()
        with self._lock:
            return self._sent(provider, model, low, high, window, prompt)

    def _sent(self, provider: str, model: str, low: int, high: int, window: Window | None,
              prompt: int | None) -> int:
        data = self._data(provider, model)
        budget = self._budget(provider, model, low, high, data)
        typical = self._prompt_tokens.get(provider)
        if window is None or not window.tokens or typical is None:
            return budget
        return self._fill(provider, model, low, high, budget, window, typical, typical if prompt is None else prompt,
                          data)

    def _fill(self, provider: str, model: str, low: int, high: int, budget: int, window: Window,
              typical: float, prompt: float, data: list[tuple[int, bool]]) -> int:
        """The budget that makes a whole number of requests fill `window` (module docstring)."""
        def share(requests: int, tokens: float) -> int:
            return int(window.tokens / requests - tokens * (1 + PROMPT_MARGIN))

        def requests_at(tokens: int) -> int:
            return min(most, max(1, int(window.tokens // (typical + tokens))))

        most = math.inf if window.requests is None else max(1, int(window.requests))
        stats = self._models.get((provider, model))
        widened = max(share(requests_at(budget), prompt), budget)
        if stats and stats.floor or self.pacing.budget_method != "min_charge" \
                or len(data) < self.pacing.budget_min_samples:
            return max(low, min(high, widened))   # only widened
        # From the most budget (fewest requests) on, one more request is taken while the answers
        # it would cut off, `m` (the share between the two budgets, at the top of its error), cost
        # less than the request brings: (n + 1) x (F - m) > n x F, i.e. m < F / (n + 1). With few
        # answers the climb starts from the learned budget's whole requests (the error term
        # stops it within a request or two of the answers' count: 20 answers never justify a 25th).
        fits, more = share_fitting(data, self.pacing.budget_truncated_factor), len(data) + 1
        requests = requests_at(high if len(data) >= self.pacing.budget_own_samples else budget)
        current = min(high, share(requests, typical))
        while requests < most:
            candidate = min(high, share(requests + 1, typical))
            if candidate < low:
                break
            cut_off = fits(current) - fits(candidate)
            if (cut_off + (math.sqrt(cut_off * more) + 1) / more) * (requests + 1) >= fits(current):
                break
            requests, current = requests + 1, candidate
        return max(low, min(high, share(requests, prompt)))

    def _data(self, provider: str, model: str) -> list[tuple[int, bool]]:
        """The answers a budget is learned from: the model's own; below `budget_own_samples` of
        them, topped up with its provider's other models' latest answers; from then on topped up
        only while the model's own answers look drawn from the same distribution as its
        siblings' (`_alike`): a model that answers like its siblings keeps the larger record the
        window fill needs (50 answers cannot show a 1-in-50 tail, 200 can), one that does not
        (a thinking model's longer answers) learns from its own."""
        stats = self._models.get((provider, model))
        own = list(stats.used) if stats else []
        room = self.pacing.budget_samples - len(own)
        if room <= 0:
            return own
        others = [(t, cut) for m, t, cut in self._pool.get(provider, ()) if m != model]
        if not others or len(own) >= self.pacing.budget_own_samples and not self._alike(provider, model, own, others):
            return own
        return own + others[max(0, len(others) - room):]

    def _alike(self, provider: str, model: str, own: list[tuple[int, bool]], others: list[tuple[int, bool]]) -> bool:
        """Whether the model's finished answers and its siblings' could come from one distribution:
        `answers_alike` at `ALIKE_LEVEL`. Cached until the next answer arrives."""
        cached = self._alike_cache.get((provider, model))
        if cached is not None and cached[0] == self._answers:
            return cached[1]
        alike = answers_alike(own, others, ALIKE_LEVEL)
        self._alike_cache[(provider, model)] = (self._answers, alike)
        return alike

    def _budget(self, provider: str, model: str, low: int, high: int, data: list[tuple[int, bool]]) -> int:
        """The budget learned from `data` (`_data`'s answers), before any window fill."""
        stats = self._models.get((provider, model))
        floor = stats.floor if stats else 0
        if len(data) < self.pacing.budget_min_samples:
            learned = max(floor, high)
        else:
            learned = max(floor, round_up(self._choose(provider, data, high)))
        return max(low, min(high, learned))

    def _choose(self, provider: str, data: list[tuple[int, bool]], high: int) -> float:
        if self.pacing.budget_method == "percentile" or len(data) < self.pacing.budget_own_samples:
            return percentile_budget(data, high, self.pacing.budget_percentile, self.pacing.budget_margin,
                                     self.pacing.budget_truncated_factor)
        return min_charge_budget([t for t, _ in data], self._prompt_tokens.get(provider, 0.0), high)

    def observe(self, provider: str, model: str, completion_tokens: int | None, truncated: bool,
                budget: int) -> None:
        """An answer used `completion_tokens` of `budget`; `truncated`: it was cut off there."""
        sample: tuple[int, bool] | None = None
        with self._lock:
            stats = self._model(provider, model)
            needed = int(math.ceil(budget * self.pacing.budget_truncated_factor))
            data = self._data(provider, model)
            if self.pacing.budget_method == "percentile" or len(data) < self.pacing.budget_own_samples:
                shifted = not any(t >= budget and not cut for t, cut in data)
            else:   # min_charge accepts a few cut-offs; a run the data makes unlikely says they got longer
                run = 1 + next((i for i, (_, cut) in enumerate(reversed(stats.used)) if not cut), len(stats.used))
                # the tail's share before this run, counted high: a tail seen rarely (or not yet)
                missed = max(0, sum(1 for t, _ in data if t > budget) - (run - 1))
                share = (missed + 1) / (len(data) - (run - 1) + 1)
                shifted = share ** run < SHIFT_EVIDENCE
            answer = (needed, True) if truncated else (completion_tokens, False)
            if answer[0] is not None and answer[0] >= 0:
                sample = (int(answer[0]), answer[1])
                self._remember(provider, model, sample)
            if stats.floor_answers > 0:
                stats.floor_answers -= 1
                if stats.floor_answers == 0:
                    stats.floor = 0
            if truncated:
                stats.truncated += 1
                if shifted:
                    stats.floor = max(stats.floor, needed)
                    stats.floor_answers = 4 * self.pacing.budget_min_samples
        if sample is not None:
            self._publish(provider, model, sample)

    def learned(self, provider: str, model: str) -> bool:
        """Whether the model's budget is learned (from its answers or its siblings'), not the configured one."""
        with self._lock:
            return self._learned(provider, model, self._data(provider, model))

    def _learned(self, provider: str, model: str, data: list[tuple[int, bool]]) -> bool:
        stats = self._models.get((provider, model))
        return bool(stats and stats.floor) or len(data) >= self.pacing.budget_min_samples

    def prompt_scale(self, provider: str) -> float:
        with self._lock:
            return self._prompt_scale.get(provider, 1.0)

    def observe_prompt(self, provider: str, estimated: int, reported: int | None) -> None:
        """An answer reported `reported` prompt tokens for a prompt estimated at `estimated`."""
        if not reported or estimated <= 0:
            return
        ratio = max(0.5, min(2.0, reported / estimated))
        with self._lock:
            tokens = self._prompt_tokens.get(provider)
            self._prompt_tokens[provider] = reported if tokens is None else 0.9 * tokens + 0.1 * reported
            previous = self._prompt_scale.get(provider)
            self._prompt_scale[provider] = ratio if previous is None else 0.8 * previous + 0.2 * ratio

    def report(self, provider: str, model: str, low: int, high: int, window: Window | None = None) -> dict[str, Any]:
        """The budget sent now for a typical prompt (sized to `window` when the provider charges it
        up front) and what it was learned from."""
        self._catch_up()
        with self._lock:
            stats = self._models.get((provider, model))
            used = [t for t, _ in stats.used] if stats else []
            data = self._data(provider, model)
            return {"budget": self._sent(provider, model, low, high, window, None), "configured": high, "minimum": low,
                    "learned": self._learned(provider, model, data),
                    "answers": len(used), "truncated": stats.truncated if stats else 0,
                    "p50": percentile(used, 50), "p95": percentile(used, 95)}
