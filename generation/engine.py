"""The generation engine: one validated sample for (topic, difficulty, sample type), through
whichever provider and model can give it now.

Composes the provider clients, the fallback router (health board, rate limiter, policy, metrics),
the prompts and the output parser. The HTTP server and the batch worker use only this class.
"""
from __future__ import annotations

import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

from config.catalog import Topic
from errors import InvalidOutput, warm_up
from fallback.health import HealthBoard
from fallback.limiter import RateLimiter
from fallback.limiter_state import LimiterStore
from fallback.metrics import Metrics, SwitchEvent
from fallback.policy import Policy
from fallback.router import AttemptRecord, Router
from generation.prompts import SampleSpec, build_messages
from config.providers import AppConfig, ModelConfig
from providers.client import Completion, ProviderClient, build_providers
from storage.shared_budgets import SharedBudgetSamples
from storage.shared_health import SharedHealthTable
from storage.shared_probes import SharedProbes
from generation.parsing import SampleContent, parse_sample
from state import utc_now


@dataclass(frozen=True)
class GenerationRequest:
    topic: Topic
    difficulty: str
    sample_type: str
    provider: str | None = None
    model: str | None = None
    instruction: str | None = None
    models: tuple[tuple[str, str], ...] | None = None   # exactly these (provider, model) pairs, in order
    strategy: str | None = None                         # None: engine.strategy

    @property
    def spec(self) -> SampleSpec:
        return SampleSpec(self.topic, self.difficulty, self.sample_type, self.instruction)


@dataclass
class GenerationResult:
    content: SampleContent
    request: GenerationRequest
    provider: str
    model: str
    prompt_tokens: int | None
    completion_tokens: int | None
    latency: float                       # the successful call
    elapsed: float                       # the whole run, failed attempts and waits included
    attempts: list[AttemptRecord] = field(default_factory=list)
    switches: list[SwitchEvent] = field(default_factory=list)
    cost_usd: float = 0.0                # the successful call at configured prices

    @property
    def total_tokens(self) -> int:
        return (self.prompt_tokens or 0) + (self.completion_tokens or 0)


def _copy(rng: random.Random | None) -> random.Random | None:
    """An independent generator in the same state (a seeded engine stays deterministic)."""
    if rng is None:
        return None
    twin = random.Random()
    twin.setstate(rng.getstate())
    return twin


class GenerationEngine:
    def __init__(self, config: AppConfig, env: Mapping[str, str], *, clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None, rejected_kept: int = 50,
                 limiter_store: LimiterStore | None = None):
        self.config = config
        self.clock = clock
        self.providers: dict[str, ProviderClient] = build_providers(config.providers, env)
        self.health = HealthBoard(clock)
        limits = {(p, m.id): m.limits for p, pc in config.providers.items() for m in pc.models}
        # `limiter_store`: where the limiter keeps its state (default: in memory, this server only;
        # a shared store lets several servers pace to one budget, with a shared clock).
        self.limiter = RateLimiter(limits, clock, config.engine.pacing, limiter_store)
        self.metrics = Metrics()
        self.policy = Policy(config.engine, rng)
        self.router = Router(config.engine, self.providers, self.health, self.limiter, self.metrics,
                             self.policy, clock, rng=_copy(rng))
        self._rejected: deque[dict[str, Any]] = deque(maxlen=rejected_kept)
        self._lock = threading.Lock()
        warm_up()

    def share_state(self, health: SharedHealthTable, limiter_store: LimiterStore, *,
                    probes: SharedProbes | None = None, budget_samples: SharedBudgetSamples | None = None) -> None:
        """PostgreSQL mode: cooldowns and disabled keys, and the rate limiter's records, shared with
        every server on the database, so that together they stay inside one provider's limits;
        with `probes`, one half-open probe system-wide per unproven model; with `budget_samples`,
        completion budgets learned from every server's answers. The limiter then runs on
        wall-clock time (`time.time`), the one clock the servers share; call this before any request."""
        self.health.share(health, probes=probes)
        if budget_samples is not None:
            self.router.budgets.share(budget_samples)
        limits = {(p, m.id): m.limits for p, pc in self.config.providers.items() for m in pc.models}
        self.limiter = self.router.limiter = RateLimiter(limits, time.time, self.config.engine.pacing,
                                                         store=limiter_store)

    # -- configuration ---------------------------------------------------------------------

    def reload_environment(self, env: Mapping[str, str]) -> list[str]:
        """Pick up changed keys or base URLs; a provider disabled for its key comes back when the
        key changes. Returns the providers whose settings changed."""
        changed = []
        fresh = build_providers(self.config.providers, env)
        for name, client in fresh.items():
            if client.key_fingerprint != self.providers[name].key_fingerprint:
                self.providers[name] = client
                changed.append(name)
        return changed

    def configured_providers(self) -> list[str]:
        return [name for name, client in self.providers.items() if client.configured]

    # -- generation ------------------------------------------------------------------------

    def estimate_prompt_tokens(self, messages: list[dict[str, str]]) -> int:
        chars = sum(len(m["content"]) for m in messages)
        return int(chars / self.config.engine.estimate_chars_per_token) + 8 * len(messages)

    def generate(self, request: GenerationRequest, *, max_wait: float = 0.0, pace_wait: float = 0.0,
                 cancel: threading.Event | None = None) -> GenerationResult:
        """One validated sample, or a `fallback.router.RoutingError` saying why not and until when.
        `max_wait`: how long it may wait for anything to recover; `pace_wait`: how long for budget
        alone (the limiter's pacing), when that is longer."""
        spec = request.spec
        messages = build_messages(spec)
        started = time.perf_counter()

        def call(client: ProviderClient, model: ModelConfig) -> tuple[SampleContent, Completion]:
            completion = client.complete(model, messages)
            try:
                return parse_sample(completion.text, spec), completion
            except InvalidOutput as exc:
                exc.completion = completion  # type: ignore[attr-defined]  # usage still counts
                self._keep_rejected(completion, str(exc), exc.raw_output)
                raise

        routed = self.router.run(call, prompt_tokens=self.estimate_prompt_tokens(messages),
                                 provider=request.provider, model=request.model, models=request.models,
                                 strategy=request.strategy, max_wait=max_wait, pace_wait=pace_wait, cancel=cancel)
        completion = routed.completion
        cost = self.config.cost(completion.provider, completion.model, completion.prompt_tokens,
                                completion.completion_tokens)
        self.metrics.record_sample(request.strategy or self.config.engine.strategy, cost)
        return GenerationResult(
            content=routed.value, request=request, provider=completion.provider, model=completion.model,
            prompt_tokens=completion.prompt_tokens, completion_tokens=completion.completion_tokens,
            latency=completion.latency, elapsed=time.perf_counter() - started,
            attempts=routed.attempts, switches=routed.switches, cost_usd=cost)

    def _keep_rejected(self, completion: Completion, reason: str, raw: str) -> None:
        with self._lock:
            self._rejected.append({"provider": completion.provider, "model": completion.model,
                                   "reason": reason, "raw_output": raw[:20000], "at": utc_now()})

    def rejected_outputs(self) -> list[dict[str, Any]]:
        """The most recent rejected model outputs, raw, for diagnosis."""
        with self._lock:
            return list(self._rejected)

    # -- reporting -------------------------------------------------------------------------

    def on_switch(self, listener: Callable[[SwitchEvent], None]) -> None:
        self.metrics.on_switch(listener)

    def provider_state(self, provider: str) -> dict[str, Any]:
        """`not_configured` (with `missing`); `disabled` (its key was rejected: `category`, `message`,
        `reason` saying why); `cooling` with `until` and `seconds_left` when the provider itself cools
        down or when every one of its models is cooling or out of budget (then `reason` says so
        and `models` names what holds each one; `until` is when the first comes back); else `ok`."""
        client = self.providers[provider]
        if not client.configured:
            return {"state": "not_configured", "missing": client.missing_setting}
        state = self._provider_health(provider)
        if state["state"] == "disabled":
            state["reason"] = f"{state.get('category')}: {state.get('message')}; disabled until its key changes"
        if state["state"] != "ok":
            return state
        holds: dict[str, dict[str, Any]] = {}
        now = self.clock()
        for model in client.config.models:
            hold = self._model_hold(provider, model, now)
            if hold is None:
                return state
            holds[model.id] = hold
        if not holds:
            return state
        ends = [now + h["seconds_left"] for h in holds.values() if h.get("seconds_left") is not None]
        categories = {h.get("category") for h in holds.values()}
        out: dict[str, Any] = {
            "state": "cooling", "scope": "models", "reason": "every model is cooling or out of budget",
            "category": categories.pop() if len(categories) == 1 else None, "message": None,
            "failures_in_a_row": 0, "models": holds}
        if ends:
            out["until"] = datetime.fromtimestamp(self.router.to_wall(min(ends)), timezone.utc).isoformat()
            out["seconds_left"] = round(max(0.0, min(ends) - now), 3)
        return out

    def _provider_health(self, provider: str) -> dict[str, Any]:
        client = self.providers[provider]
        return self.health.state(provider, None, client.key_fingerprint, self.router.to_wall)

    def _model_hold(self, provider: str, model: ModelConfig, now: float) -> dict[str, Any] | None:
        """What keeps a model from being tried now (cooling, disabled, out of budget), or None."""
        client = self.providers[provider]
        state = self.health.state(provider, model.id, client.key_fingerprint, self.router.to_wall)
        if state["state"] != "ok":
            return {k: state.get(k) for k in ("state", "until", "seconds_left", "category", "reason")}
        wait = self.limiter.wait_time(provider, model.id, self.router.completion_budget(provider, model))
        if wait <= 0:
            return None
        hold: dict[str, Any] = {"state": "out_of_budget", "window": wait.windows[0] if wait.windows else None,
                                "category": "rate_limit"}
        if wait != float("inf"):
            hold["until"] = datetime.fromtimestamp(self.router.to_wall(now + wait), timezone.utc).isoformat()
            hold["seconds_left"] = round(float(wait), 3)
        return hold

    def completion_budget(self, provider: str, model: ModelConfig) -> dict[str, Any]:
        """The model's learned completion budget: `budget` (sent now), `configured`, `minimum`,
        `learned`, `answers` it was learned from, `truncated` answers, their `p50`/`p95`."""
        return self.router.budget_report(provider, model)

    def learned_limits(self, provider: str) -> list[dict[str, Any]]:
        """Limits learned from the provider's 429s, with their scope (see RateLimiter.learned_limits)."""
        return self.limiter.learned_limits(provider)

    def model_state(self, provider: str, model: str) -> dict[str, Any]:
        client = self.providers[provider]
        state = self.health.state(provider, model, client.key_fingerprint, self.router.to_wall)
        if state["state"] == "ok":
            provider_state = (self._provider_health(provider) if client.configured else
                              {"state": "not_configured", "missing": client.missing_setting})
            if provider_state["state"] != "ok":
                state = {**provider_state, "failures_in_a_row": state.get("failures_in_a_row", 0)}
        state["budget"] = self.limiter.snapshot(provider, model)
        return state

    def model_states(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Compact state of every model of every configured provider: state, until, category, reason."""
        return {name: {model.id: {k: state.get(k) for k in ("state", "until", "category", "reason")}
                       for model in client.config.models
                       for state in (self.model_state(name, model.id),)}
                for name, client in self.providers.items() if client.configured}

    def report(self) -> dict[str, Any]:
        """Every provider and model: state, counts by outcome and category, latency, tokens."""
        out: dict[str, Any] = {}
        for name, client in self.providers.items():
            models = {}
            for model in client.config.models:
                models[model.id] = {**self.model_state(name, model.id),
                                    "stats": self.metrics.model_report(name, model.id)}
            out[name] = {"name": client.display_name, "configured": client.configured,
                         **self.provider_state(name), "models": models}
        return out
