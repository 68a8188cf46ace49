"""The fallback router: runs one unit of work (one sample) across providers and models.

The candidates and their order come from `fallback.planning`; what ends a run from
`fallback.outcomes`; what holds each candidate, for waits and errors, from `fallback.blocked_report`.
The run skips what is cooling, disabled, not configured or out of budget. One run never tries the
same (provider, model) twice, and is bounded by `engine.max_attempts` and
`engine.sample_deadline_seconds`. When nothing can be tried now, the run waits for the earliest
recovery if the caller allows that wait, or raises `AllCooling` with the time to come back.
"""
from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import replace
from typing import Any, Callable, Mapping, Sequence

from config.providers import EngineConfig, ModelConfig
from errors import Category, Failure, classify
from fallback.blocked_report import PROBE_WAIT, Hold, Reporting, describe
from fallback.budgets import CompletionBudgets
from fallback.health import BUSY, OWNED, Blocked, HealthBoard
from fallback.limiter import RateLimiter, Reservation, Wait
from fallback.metrics import Metrics, SwitchEvent
from fallback.outcomes import (AllCooling, AttemptRecord, AttemptsExhausted, Cancelled, DeadlineExceeded,  # noqa: F401
                               GaveUp, NoRecovery, Pair, Routed, RoutingError, Stopped, T)   # (re-exported)
from fallback.planning import Planning
from fallback.run_state import Run
from fallback.policy import Action, Decision, Policy
from providers.client import Completion, ProviderClient
from providers.headers import read_rate_limits
from state import utc_now


# Failures that say the provider cannot serve now (not that the request is wrong).
CAPACITY = frozenset({Category.RATE_LIMIT, Category.QUOTA_EXHAUSTED, Category.MODEL_UNAVAILABLE,
                      Category.SERVER_ERROR, Category.TIMEOUT})

Call = Callable[[ProviderClient, ModelConfig], "tuple[T, Completion]"]


class Router(Planning, Reporting):
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

    # -- running ---------------------------------------------------------------------------

    def run(self, call: Call, *, prompt_tokens: int, provider: str | None = None, model: str | None = None,
            models: Sequence[Pair] | None = None, strategy: str | None = None,
            max_wait: float = 0.0, cancel: threading.Event | None = None, pace_wait: float = 0.0) -> Routed:
        plan = self.candidates(provider=provider, model=model, models=models, strategy=strategy,
                               prompt_tokens=prompt_tokens)
        run = Run(plan, self.clock() + self.engine.sample_deadline_seconds, cancel, max_wait,
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

    def _check_bounds(self, run: Run) -> None:
        if run.cancel is not None and run.cancel.is_set():
            raise self._error(Cancelled, "cancelled", run)
        if len(run.attempts) >= self.engine.max_attempts:
            raise self._error(AttemptsExhausted, f"gave up after {len(run.attempts)} attempts", run,
                              retry_after=self._earliest_recovery(run.plan))
        if self.clock() >= run.deadline:
            raise self._error(DeadlineExceeded, f"no sample within {self.engine.sample_deadline_seconds:g}s",
                              run, retry_after=self._earliest_recovery(run.plan))

    def _choose(self, run: Run, prompt_tokens: int) -> tuple[Pair, Reservation, bool] | RoutingError | None:
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

    def _awaits_siblings(self, run: Run, provider: str, model: ModelConfig) -> bool:
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

    def _nothing_now(self, run: Run, waiting: list[tuple[float, Pair, Hold]]) -> RoutingError | None:
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

    def _sleep(self, run: Run, seconds: float) -> None:
        if run.cancel is not None:
            run.cancel.wait(seconds)
        else:
            time.sleep(seconds)

    def _note_skips(self, run: Run, chosen: Pair, waiting: list[tuple[float, Pair, Hold]]) -> None:
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

    def _switch(self, run: Run, source: Pair, target: Pair, reason: str, category: str) -> None:
        event = SwitchEvent(source[0], target[0], source[1], target[1], reason, category)
        run.switches.append(event)
        self.metrics.record_switch(event)

    def _attempt(self, run: Run, pair: Pair, reservation: Reservation, call: Call) -> Routed | None:
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
        started_at, started = utc_now(), time.perf_counter()
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

    def _after_failure(self, run: Run, pair: Pair, reservation: Reservation, exc: Exception,
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

    def _fail_over(self, run: Run, name: str) -> bool:
        """After `provider_failover_after` capacity failures of one provider in this sample, move on
        to the next provider in the plan (if there is one), whatever models the first has left."""
        if run.capacity_failures.get(name, 0) < self.engine.provider_failover_after:
            return False
        return any(p != name and p not in run.skip_providers and self.providers[p].configured
                   for p, _ in run.plan)

    def _learn_budget(self, run: Run, pair: Pair, completion: Completion) -> None:
        """Feed the answer's completion tokens to the model's budget; a cut-off answer raises it."""
        self.budgets.observe(pair[0], pair[1], completion.completion_tokens,
                             completion.finish_reason == "length", run.budget)
        self.budgets.observe_prompt(pair[0], run.prompt_tokens, completion.prompt_tokens)

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

    def _error(self, cls: type[RoutingError], message: str, run: Run, retry_after: float | None = None,
               blocked: list[dict[str, Any]] | None = None,
               waiting: Sequence[tuple[float, Pair, Hold]] = ()) -> RoutingError:
        if blocked is None and cls not in (Cancelled, GaveUp, Stopped):
            blocked = self.report(run, waiting)
        return cls(message, attempts=run.attempts, switches=run.switches, retry_after=retry_after,
                   last_failure=run.last_failure, blocked=blocked)
