"""The fallback router: runs one unit of work (one sample) across providers and models.

Order: the requested model, the rest of its provider's list, then the other providers' lists in
`engine.provider_order` (then any other declared provider), or exactly the caller's own `models`
list; a strategy (`fallback/strategies.py`: order, cheapest, fastest, spread) may reorder them.
The run skips what is cooling, disabled, not configured or out of budget. One run never tries the
same (provider, model) twice, and is bounded by `engine.max_attempts` and
`engine.sample_deadline_seconds`. When nothing can be tried now, the run waits for the earliest
recovery if the caller allows that wait, or raises `AllCooling` with the time to come back.
"""
from __future__ import annotations

import math
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Callable, Generic, Mapping, Sequence, TypeVar, Union

from errors import Category, Failure, classify
from fallback.budgets import CompletionBudgets, Window
from fallback.health import BUSY, OWNED, Blocked, HealthBoard
from fallback.limiter import WINDOW_NAMES, RateLimiter, Reservation, Wait, window_label
from fallback.metrics import Metrics, SwitchEvent, utc_now_iso
from fallback.policy import Action, Decision, Policy
from fallback.strategies import Signals, arrange
from config.providers import EngineConfig, ModelConfig
from providers.client import Completion, ProviderClient
from providers.headers import read_rate_limits

T = TypeVar("T")
Pair = tuple[str, str]
PROBE_WAIT = 0.25   # how long to expect an untried model's first answer before looking again
Hold = Union[Blocked, Wait, None]   # why a candidate waits: health, budget, or (None) its first answer pending


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


# Failures that say the provider cannot serve now (not that the request is wrong).
CAPACITY = frozenset({Category.RATE_LIMIT, Category.QUOTA_EXHAUSTED, Category.MODEL_UNAVAILABLE,
                      Category.SERVER_ERROR, Category.TIMEOUT})

_KIND = {AllCooling: "all_cooling", NoRecovery: "no_recovery", AttemptsExhausted: "exhausted",
         DeadlineExceeded: "deadline", GaveUp: "gave_up", Stopped: "stopped", Cancelled: "cancelled"}

Call = Callable[[ProviderClient, ModelConfig], "tuple[T, Completion]"]


@dataclass
class _Run:
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


class Router:
    def __init__(self, engine: EngineConfig, providers: Mapping[str, ProviderClient], health: HealthBoard,
                 limiter: RateLimiter, metrics: Metrics, policy: Policy,
                 clock: Callable[[], float] = time.monotonic, budgets: CompletionBudgets | None = None,
                 rng: random.Random | None = None):
        self.engine = engine
        self.budgets = budgets or CompletionBudgets(engine.pacing)
        self.rng = rng or random.Random()
        self.providers = providers
        self.health = health
        self.limiter = limiter
        self.metrics = metrics
        self.policy = policy
        self.clock = clock
        self._in_flight: Counter[str] = Counter()   # per provider: requests on their way
        self._flight_lock = threading.Lock()

    def to_wall(self, mono: float) -> float:
        return time.time() + (mono - self.clock())

    # -- planning --------------------------------------------------------------------------

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

    # -- running ---------------------------------------------------------------------------

    def run(self, call: Call, *, prompt_tokens: int, provider: str | None = None, model: str | None = None,
            models: Sequence[Pair] | None = None, strategy: str | None = None,
            max_wait: float = 0.0, cancel: threading.Event | None = None, pace_wait: float = 0.0) -> Routed:
        plan = self.candidates(provider=provider, model=model, models=models, strategy=strategy,
                               prompt_tokens=prompt_tokens)
        run = _Run(plan, self.clock() + self.engine.sample_deadline_seconds, cancel, max_wait,
                   prompt_tokens, pace_wait)
        while True:
            self._check_bounds(run)
            choice = self._choose(run, prompt_tokens)
            if isinstance(choice, RoutingError):
                raise choice
            if choice is None:
                continue  # waited for a recovery; look again
            pair, reservation, owns_probe = choice
            self._flying(pair[0], 1)
            try:
                result = self._attempt(run, pair, reservation, call)
            finally:
                self._flying(pair[0], -1)
                # Whatever the attempt did, raised or returned, the pair's half-open probe (only if
                # this run holds it) is given back, after its success or cooldown is recorded.
                if owns_probe:
                    self.health.end_probe(*pair)
            if result is not None:
                return result

    def _check_bounds(self, run: _Run) -> None:
        if run.cancel is not None and run.cancel.is_set():
            raise self._error(Cancelled, "cancelled", run)
        if len(run.attempts) >= self.engine.max_attempts:
            raise self._error(AttemptsExhausted, f"gave up after {len(run.attempts)} attempts", run,
                              retry_after=self._earliest_recovery(run.plan))
        if self.clock() >= run.deadline:
            raise self._error(DeadlineExceeded, f"no sample within {self.engine.sample_deadline_seconds:g}s",
                              run, retry_after=self._earliest_recovery(run.plan))

    def _choose(self, run: _Run, prompt_tokens: int) -> tuple[Pair, Reservation, bool] | RoutingError | None:
        """The next pair with its budget reserved; None after waiting; or the error to raise."""
        waiting: list[tuple[float, Pair, Hold]] = []
        for pair in run.plan:
            name, model_id = pair
            client = self.providers[name]
            if pair in run.tried or name in run.skip_providers or not client.configured:
                continue
            blocked = self.blocked(pair)
            if blocked is not None:
                if blocked.until is not None:
                    waiting.append((blocked.until, pair, blocked))
                continue
            model = client.config.model(model_id)
            if model is None:
                continue
            if self._awaits_siblings(run, name, model):
                waiting.append((self.clock() + PROBE_WAIT, pair, None))
                continue
            probe = self.health.claim_probe(name, model_id)
            if probe == BUSY:   # an untried model's first answer is pending
                waiting.append((self.clock() + PROBE_WAIT, pair, None))
                continue
            owns_probe = probe == OWNED
            handed_over = False   # from here a probe we own is ours until `run` takes it with the pair
            try:
                prompt = self._prompt(name, prompt_tokens)
                run.budget = self.completion_budget(name, model, prompt)
                client.sdk()   # built before the budget is taken, so the request leaves when it is reserved
                reservation = self.limiter.reserve(name, model_id, prompt + run.budget)
                if isinstance(reservation, Reservation):
                    self._note_skips(run, pair, waiting)
                    handed_over = True
                    return pair, reservation, owns_probe
            finally:
                if owns_probe and not handed_over:
                    self.health.end_probe(name, model_id)
            if reservation != float("inf"):
                waiting.append((self.clock() + reservation, pair, reservation))
        return self._nothing_now(run, waiting)

    def _flying(self, provider: str, change: int) -> None:
        with self._flight_lock:
            self._in_flight[provider] += change

    def _awaits_siblings(self, run: _Run, provider: str, model: ModelConfig) -> bool:
        """Whether the model lets its siblings answer first: a provider charging the budget up
        front would charge its first request the configured budget (8,192 for a thinking model:
        3-4 requests of a 60,000-token window), while its siblings' answers teach it one (they are
        its prior, fallback/budgets.py). Only a model configured above a sibling waits, its budget
        not learned yet, and only while a request of the provider is on its way or this run can
        try a sibling configured lower."""
        config = self.providers[provider].config
        if config.token_accounting != "reserved" or self.budgets.learned(provider, model.id):
            return False
        budget = config.completion_budget(model)
        if budget <= min(config.completion_budget(m) for m in config.models):
            return False
        if self._in_flight[provider]:
            return True
        for name, model_id in run.plan:
            sibling = config.model(model_id) if name == provider else None
            if (sibling is not None and (name, model_id) not in run.tried and config.completion_budget(sibling) < budget
                    and self.blocked((name, model_id)) is None):
                return True
        return False

    def _nothing_now(self, run: _Run, waiting: list[tuple[float, Pair, Hold]]) -> RoutingError | None:
        """Nothing can be tried now: wait for the earliest recovery, or say why not."""
        recoverable = [w for w in waiting if not isinstance(w[2], Blocked) or not w[2].permanent]
        if not recoverable:
            configured = [pair for pair in run.plan if self.providers[pair[0]].configured]
            if not configured:
                missing = sorted({c.missing_setting for c in self.providers.values() if c.missing_setting})
                return self._error(NoRecovery, "no provider is configured (set " + " or ".join(missing) + ")", run)
            if all((b := self.blocked(pair)) is not None and b.permanent for pair in configured):
                return self._error(NoRecovery, "no provider or model can recover: " + self._why(run, waiting), run,
                                   waiting=waiting)
            return self._error(AttemptsExhausted, "every candidate failed: " + self._why(run, waiting), run,
                               retry_after=self._earliest_recovery(run.plan), waiting=waiting)
        earliest, _, hold = min(recoverable, key=lambda w: w[0])
        now = self.clock()
        delay = max(0.0, earliest - now)
        patience = max(run.max_wait, run.pace_wait) if isinstance(hold, Wait) else run.max_wait
        if delay <= min(run.deadline - now, patience):
            self._sleep(run, delay)
            return None
        blocked = self.report(run, waiting)
        return self._error(AllCooling, f"every candidate is cooling down or out of budget: {describe(blocked)}",
                           run, retry_after=delay, blocked=blocked)

    def _sleep(self, run: _Run, seconds: float) -> None:
        if run.cancel is not None:
            run.cancel.wait(seconds)
        else:
            time.sleep(seconds)

    def _why(self, run: _Run, waiting: list[tuple[float, Pair, Hold]]) -> str:
        if run.last_failure is not None and not waiting:
            return f"last failure {run.last_failure.category.value}: {run.last_failure.message}"
        return describe(self.report(run, waiting)) or "nothing left to try"

    def report(self, run: _Run, waiting: Sequence[tuple[float, Pair, Hold]] = ()) -> list[dict[str, Any]]:
        """Every configured candidate of the run, in plan order, and what holds it now:
        `{provider, model, why, ...}` where `why` is `cooling` (with category, reason, message,
        scope, until, seconds), `disabled` (category, message), `budget` (window: the limit that
        holds it longest, windows, until, seconds), `probe` (a first request to it is pending),
        `failed` (tried in this run; category, message) or `free` (nothing holds it any more)."""
        held = {pair: hold for _, pair, hold in waiting}
        now = self.clock()
        out: list[dict[str, Any]] = []
        for pair in run.plan:
            name, model_id = pair
            client = self.providers[name]
            model = client.config.model(model_id)
            if not client.configured or model is None:
                continue
            entry: dict[str, Any] = {"provider": name, "model": model_id}
            hold = held.get(pair, False)
            blocked = hold if isinstance(hold, Blocked) else self.blocked(pair)
            if blocked is not None:
                entry.update(why="disabled" if blocked.until is None else "cooling", category=blocked.category,
                             reason=blocked.reason, message=blocked.message, scope=blocked.scope,
                             **self._when(blocked.until, now))
            elif hold is None:
                entry.update(why="probe", **self._when(now + PROBE_WAIT, now))
            elif pair in run.tried or name in run.skip_providers:
                last = next((a for a in reversed(run.attempts) if a.provider == name
                             and (a.model == model_id or pair not in run.tried)), None)
                entry.update(why="failed", category=last.category if last else None,
                             message=last.message if last else None)
            else:
                wait = hold if isinstance(hold, Wait) else self.limiter.wait_time(
                    name, model_id, self._prompt(name, run.prompt_tokens) + self.completion_budget(name, model))
                if wait > 0:
                    entry.update(why="budget", window=wait.windows[0] if wait.windows else None,
                                 windows=list(wait.windows),
                                 **self._when(now + wait if math.isfinite(wait) else None, now))
                else:
                    entry.update(why="free")
            out.append(entry)
        return out

    def _when(self, until: float | None, now: float) -> dict[str, Any]:
        if until is None:
            return {"until": None, "seconds": None}
        return {"until": datetime.fromtimestamp(self.to_wall(until), timezone.utc).isoformat(),
                "seconds": round(max(0.0, until - now), 3)}

    def _earliest_recovery(self, plan: list[Pair]) -> float | None:
        now = self.clock()
        times = [b.until for b in (self.blocked(p) for p in plan if self.providers[p[0]].configured)
                 if b is not None and b.until is not None and not b.permanent]
        return max(0.0, min(times) - now) if times else None

    def _note_skips(self, run: _Run, chosen: Pair, waiting: list[tuple[float, Pair, Hold]]) -> None:
        """Record the move to `chosen`: after a failure, or when the preferred pair was skipped."""
        if run.pending is not None and run.previous is not None:
            self._switch(run, run.previous, chosen, run.pending.message, run.pending.category.value)
        elif run.previous is None and chosen != run.plan[0]:
            skipped = next((w for w in waiting if w[1] == run.plan[0]), None)
            if skipped is not None:
                blocked = skipped[2]
                if not isinstance(blocked, Blocked):
                    reason, category = "out of budget (proactive rate limit)", Category.RATE_LIMIT.value
                else:
                    reason = f"cooling: {blocked.message or blocked.category}"
                    category = blocked.category or "unknown"
                self._switch(run, run.plan[0], chosen, reason, category)
        run.pending = None

    def _switch(self, run: _Run, source: Pair, target: Pair, reason: str, category: str) -> None:
        event = SwitchEvent(source[0], target[0], source[1], target[1], reason, category)
        run.switches.append(event)
        self.metrics.record_switch(event)

    def _attempt(self, run: _Run, pair: Pair, reservation: Reservation, call: Call) -> Routed | None:
        """One call on `pair`: the result, or None after a classified failure. `run` releases the
        pair's half-open probe afterwards, whatever happens here."""
        name, model_id = pair
        client = self.providers[name]
        model = client.config.model(model_id)
        assert model is not None
        if run.budget and run.budget != client.config.completion_budget(model):
            model = model.model_copy(update={"max_completion_tokens": run.budget})
        run.tried.add(pair)
        run.previous = pair
        started_at, started = utc_now_iso(), time.perf_counter()
        try:
            value, completion = call(client, model)
        except Exception as exc:  # every failure is classified; nothing escapes unexamined
            latency = time.perf_counter() - started
            self._after_failure(run, pair, reservation, exc, started_at, latency)
            return None
        self._learn_budget(run, pair, completion)
        self.limiter.settle(reservation, self._charged(client, completion.total_tokens),
                            read_rate_limits(completion.headers, client.kind))
        self.health.record_success(name, model_id)
        self.metrics.record_attempt(name, model_id, category=None, latency=completion.latency,
                                    prompt_tokens=completion.prompt_tokens,
                                    completion_tokens=completion.completion_tokens)
        run.attempts.append(AttemptRecord(name, model_id, started_at, completion.latency, "success",
                                          prompt_tokens=completion.prompt_tokens,
                                          completion_tokens=completion.completion_tokens))
        return Routed(value, completion, run.attempts, run.switches)

    def _after_failure(self, run: _Run, pair: Pair, reservation: Reservation, exc: Exception,
                       started_at: str, latency: float) -> None:
        name, model_id = pair
        client = self.providers[name]
        failure = classify(exc, client.kind, client.secrets)
        model = client.config.model(model_id)
        if failure.reason == "truncated" and (model is None or run.budget >= client.config.completion_budget(model)):
            failure = replace(failure, reason=None)   # cut off at the configured budget: no learned budget to blame
        completion: Completion | None = getattr(exc, "completion", None)
        response = getattr(exc, "response", None)
        headers = dict(getattr(response, "headers", None) or {}) or (completion.headers if completion else {})
        used = completion.total_tokens if completion else (0 if failure.status and failure.status < 500 else None)
        self.limiter.settle(reservation, self._charged(client, used) if completion else used,
                            read_rate_limits(headers, client.kind))
        if completion is not None:
            self._learn_budget(run, pair, completion)
        if failure.category == Category.RATE_LIMIT:
            self.limiter.rate_limited(reservation, failure.wait_seconds, failure.message)

        rule = self.policy.rule_for(failure)
        in_a_row = self.health.count_failure(name, model_id) if not rule.critical else self.health.in_a_row(name, model_id) + 1
        run.per_category[failure.category.value] = run.per_category.get(failure.category.value, 0) + 1
        decision = self.policy.decide(failure, in_a_row, run.per_category[failure.category.value])
        self._apply(pair, failure, decision)

        self.metrics.record_attempt(name, model_id, category=failure.category.value, latency=latency,
                                    prompt_tokens=completion.prompt_tokens if completion else None,
                                    completion_tokens=completion.completion_tokens if completion else None,
                                    message=failure.message)
        run.attempts.append(AttemptRecord(name, model_id, started_at, latency, "failure", failure.category.value,
                                          failure.message, decision.action.value, decision.cooldown_seconds,
                                          completion.prompt_tokens if completion else None,
                                          completion.completion_tokens if completion else None))
        run.last_failure = failure
        run.pending = failure
        if failure.category in CAPACITY:
            run.capacity_failures[name] = run.capacity_failures.get(name, 0) + 1
        if decision.action == Action.NEXT_PROVIDER or self._fail_over(run, name):
            run.skip_providers.add(name)
        elif decision.action == Action.GIVE_UP:
            raise self._error(GaveUp, f"gave up on this sample: {failure.category.value}: {failure.message}", run)
        elif decision.action == Action.STOP:
            raise self._error(Stopped, f"stopped: {failure.message}", run)

    def _fail_over(self, run: _Run, name: str) -> bool:
        """After `provider_failover_after` capacity failures of one provider in this sample, move on
        to the next provider in the plan (if there is one), whatever models the first has left."""
        if run.capacity_failures.get(name, 0) < self.engine.provider_failover_after:
            return False
        return any(p != name and p not in run.skip_providers and self.providers[p].configured
                   for p, _ in run.plan)

    def _learn_budget(self, run: _Run, pair: Pair, completion: Completion) -> None:
        """Feed the answer's completion tokens to the model's budget; a cut-off answer raises it."""
        self.budgets.observe(pair[0], pair[1], completion.completion_tokens,
                             completion.finish_reason == "length", run.budget)
        self.budgets.observe_prompt(pair[0], run.prompt_tokens, completion.prompt_tokens)

    def _prompt(self, provider: str, estimated: int) -> int:
        """The prompt's estimated tokens, corrected by what the provider's answers reported."""
        return int(estimated * self.budgets.prompt_scale(provider) + 0.5)

    @staticmethod
    def _charged(client: ProviderClient, used: int | None) -> int | None:
        """Tokens a completed call counts against the limits: its usage, or (for providers that
        charge the completion budget up front) the reservation as made (None keeps it)."""
        return None if client.config.token_accounting == "reserved" else used

    def _apply(self, pair: Pair, failure: Failure, decision: Decision) -> None:
        name, model_id = pair
        client = self.providers[name]
        if decision.cooldown_seconds is None:
            if decision.switched and decision.scope.value == "provider":
                self.health.disable(name, client.key_fingerprint, failure)
            return
        if decision.cooldown_seconds <= 0:
            return
        target_model = None if decision.scope.value == "provider" else model_id
        self.health.cool(name, target_model, decision.cooldown_seconds, failure, decision.switched)

    def _error(self, cls: type[RoutingError], message: str, run: _Run, retry_after: float | None = None,
               blocked: list[dict[str, Any]] | None = None,
               waiting: Sequence[tuple[float, Pair, Hold]] = ()) -> RoutingError:
        if blocked is None and cls not in (Cancelled, GaveUp, Stopped):
            blocked = self.report(run, waiting)
        return cls(message, attempts=run.attempts, switches=run.switches, retry_after=retry_after,
                   last_failure=run.last_failure, blocked=blocked)


def describe(blocked: list[dict[str, Any]]) -> str:
    """One line naming every candidate and what holds it, soonest back first, e.g.
    "cerebras/c-small out of budget (tokens per minute) for 2.1s, groq/g-large cooling (rate_limit) for 4s"."""
    def soonest(entry: dict[str, Any]) -> float:
        return entry["seconds"] if entry.get("seconds") is not None else math.inf

    parts = []
    for entry in sorted(blocked, key=soonest):
        why = entry.get("why")
        if why == "cooling":
            text = f"cooling ({entry.get('category') or 'unknown'}{', backoff' if entry.get('reason') == 'backoff' else ''})"
        elif why == "budget":
            text = f"out of budget ({window_label(entry['window']) if entry.get('window') else 'rate limit'})"
        elif why == "disabled":
            text = f"disabled ({entry.get('category')}: {entry.get('message')})"
        elif why == "probe":
            text = "waiting for its first answer"
        elif why == "failed":
            text = f"failed in this attempt ({entry.get('category')})"
        else:
            text = "free again"
        if entry.get("seconds") is not None and why != "probe":
            text += f" for {entry['seconds']:.1f}s"
        parts.append(f"{entry['provider']}/{entry['model']} {text}")
    return ", ".join(parts)
