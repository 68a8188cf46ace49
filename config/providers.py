"""Provider and engine configuration: the shipped YAML, a user override file, validation.

`load_config()` merges `config/providers.yaml` with the file named by PROVIDER_CONFIG_FILE (or an
explicit path) and returns a validated `AppConfig`. Anything wrong fails here, at start-up, with a
`ConfigError` naming the bad entry.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

SHIPPED_CONFIG = Path(__file__).resolve().parent / "providers.yaml"

# Cooldown (seconds) per failure category or reason, unless the failure carries its own wait hint;
# `engine.cooldowns` overrides any of them. The fallback policy says which applies when.
DEFAULT_COOLDOWNS: dict[str, float] = {
    "rate_limit": 20, "quota_exhausted": 3600, "model_unavailable": 60, "model_gone": 3600,
    "timeout": 30, "connection_error": 15, "server_error": 10, "bad_request": 120,
    "invalid_output": 60, "unknown": 30,
}

USER_CONFIG_ENV = "PROVIDER_CONFIG_FILE"
PROVIDER_KINDS = ("groq", "cerebras", "openai")
# Routing strategies (`fallback/strategies.py` implements each; its table must list these, in order).
STRATEGY_NAMES = ("order", "cheapest", "fastest", "spread")
StrategyName = Literal["order", "cheapest", "fastest", "spread"]


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the bad entry."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Limits(_Strict):
    """Requests and tokens per minute, hour and day; None means not limited by us."""

    rpm: int | None = Field(default=None, ge=0)
    rph: int | None = Field(default=None, ge=0)
    rpd: int | None = Field(default=None, ge=0)
    tpm: int | None = Field(default=None, ge=0)
    tph: int | None = Field(default=None, ge=0)
    tpd: int | None = Field(default=None, ge=0)


class Price(_Strict):
    """USD per million tokens."""

    input: float = Field(default=0.0, ge=0)
    output: float = Field(default=0.0, ge=0)

    def cost(self, prompt_tokens: int | None, completion_tokens: int | None) -> float:
        """USD for this many tokens (None counts as 0)."""
        return ((prompt_tokens or 0) * self.input + (completion_tokens or 0) * self.output) / 1e6


class Timeouts(_Strict):
    connect: float | None = Field(default=None, gt=0)
    read: float | None = Field(default=None, gt=0)


class ModelConfig(_Strict):
    id: str = Field(min_length=1)
    name: str | None = None
    owned_by: str | None = None
    context_window: int | None = Field(default=None, gt=0)
    limits: Limits = Limits()
    price: Price = Price()
    thinking: bool = False          # wraps its output in <think> tags, needs a larger budget
    json_mode: bool = True          # send response_format={"type": "json_object"}
    max_completion_tokens: int | None = Field(default=None, gt=0)
    min_completion_tokens: int | None = Field(default=None, gt=0)
    temperature: float | None = Field(default=None, ge=0, le=2)
    timeouts: Timeouts = Timeouts()
    legacy: bool = False

    @property
    def display_name(self) -> str:
        return self.name or self.id


class ProviderConfig(_Strict):
    kind: Literal["groq", "cerebras", "openai"]
    name: str | None = None
    api_key_env: str | None = None
    base_url_env: str | None = None
    base_url: str | None = None
    requires_key: bool = True
    # "usage": token limits count what a call really used; "reserved": the provider charges
    # prompt + max_completion_tokens up front (Cerebras), so the reservation stands.
    token_accounting: Literal["usage", "reserved"] = "usage"
    timeouts: Timeouts = Timeouts(connect=5.0, read=60.0)
    # The completion budget sent as max_completion_tokens is learned per model from real answers,
    # between these bounds (a model's own settings win): the configured budget is the upper bound.
    max_completion_tokens: int = Field(default=2048, gt=0)
    min_completion_tokens: int = Field(default=512, gt=0)
    temperature: float = Field(default=0.7, ge=0, le=2)
    models: tuple[ModelConfig, ...]

    def model(self, model_id: str) -> ModelConfig | None:
        return next((m for m in self.models if m.id == model_id), None)

    def completion_budget(self, model: ModelConfig) -> int:
        """The configured budget: the most a learned budget may ask for."""
        return model.max_completion_tokens or self.max_completion_tokens

    def completion_floor(self, model: ModelConfig) -> int:
        """The least a learned budget may ask for (never above the configured budget)."""
        return min(model.min_completion_tokens or self.min_completion_tokens, self.completion_budget(model))

    def temperature_for(self, model: ModelConfig) -> float:
        return self.temperature if model.temperature is None else model.temperature

    def timeout_for(self, model: ModelConfig) -> tuple[float, float]:
        """(connect, read) seconds for a call to this model."""
        connect = model.timeouts.connect or self.timeouts.connect or 5.0
        read = model.timeouts.read or self.timeouts.read or 60.0
        return connect, read


class Backoff(_Strict):
    base_seconds: float = Field(default=1.0, ge=0)
    max_seconds: float = Field(default=30.0, ge=0)


class PacingConfig(_Strict):
    """How the limiter paces, learns limits and sizes completion budgets (fallback/limiter.py,
    fallback/learning.py, fallback/budgets.py)."""

    # Windows up to this long are paced evenly (GCRA, no burst); longer ones (hour, day) are
    # token buckets that may be spent at the shorter windows' pace.
    steady_max_window_seconds: float = Field(default=60.0, gt=0)
    # Every window's length is multiplied by this (tests and benches shorten time with it).
    time_scale: float = Field(default=1.0, gt=0)
    # Added to every window's length: a request reaches the provider a moment after we send it,
    # sooner or later depending on the network, so spacing exactly span/limit could put one more
    # than the limit in one of its windows.
    jitter_seconds: float = Field(default=0.15, ge=0)
    learn_limits: bool = True
    learn_safety: float = Field(default=0.95, gt=0, le=1)       # pace at this share of the estimate
    learn_decrease: float = Field(default=0.7, gt=0, le=1)      # a learned limit hit again drops at most to this share
    scope_tolerance_seconds: float = Field(default=2.0, ge=0)   # 429 resets this close: one shared window
    max_learn_hint_seconds: float = Field(default=600.0, gt=0)  # longer waits are quotas, not windows
    probe_after: float = Field(default=0.5, gt=0)    # probe upward after this share of a calm window...
    probe_first_step: float = Field(default=0.05, gt=0, le=1)   # ...by this much, doubling each time...
    probe_again_after: float = Field(default=0.25, gt=0)        # ...every this share of a window after the first...
    probe_max_step: float = Field(default=0.4, gt=0)            # ...up to this step
    # min_charge: the budget that minimises the expected tokens charged per finished answer (a
    # cut-off answer is charged and asked again); percentile: budget_percentile x (1 + budget_margin).
    budget_method: Literal["min_charge", "percentile"] = "min_charge"
    budget_percentile: float = Field(default=95.0, gt=0, le=100)
    budget_margin: float = Field(default=0.10, ge=0)            # budget = percentile x (1 + margin)
    budget_own_samples: int = Field(default=50, ge=1)           # below this many: the pool helps, percentile rule
    budget_min_samples: int = Field(default=5, ge=1)            # answers before the budget is learned
    budget_samples: int = Field(default=200, ge=1)              # answers kept per model
    budget_truncated_factor: float = Field(default=1.5, gt=1)   # raise after finish_reason=length


class EngineConfig(_Strict):
    default_provider: str = "groq"
    provider_order: tuple[str, ...] = ("groq", "cerebras")
    max_attempts: int = Field(default=8, ge=1)
    # Capacity failures (rate limit, quota, capacity, server error, timeout) of one provider in one
    # sample before the sample moves on to the next provider, however many models the first lists.
    provider_failover_after: int = Field(default=3, ge=1)
    sample_deadline_seconds: float = Field(default=240.0, gt=0)
    switch_after: int = Field(default=3, ge=1)
    backoff: Backoff = Backoff()
    cooldowns: dict[str, float] = {}
    # A provider's wait hint longer than this is nonsense (a mis-set header, a date years away):
    # the category's default cooldown applies instead.
    max_wait_hint_seconds: float = Field(default=86400.0, gt=0)
    estimate_chars_per_token: float = Field(default=3.5, gt=0)
    pacing: PacingConfig = PacingConfig()
    # How a request without its own `strategy` orders its candidates (fallback/strategies.py).
    strategy: StrategyName = "order"

    @model_validator(mode="after")
    def _non_negative_cooldowns(self) -> "EngineConfig":
        for name, seconds in self.cooldowns.items():
            if seconds < 0:
                raise ValueError(f"cooldowns.{name}: must be >= 0, got {seconds}")
        return self


class BatchConfig(_Strict):
    """How the background batch worker runs (see batch/worker.py)."""

    max_in_flight: int = Field(default=16, ge=1, le=256)
    topic_skip_after: int = Field(default=3, ge=1)
    topic_skip_seconds: float = Field(default=600, ge=0)
    max_wait_seconds: float = Field(default=30, gt=0)
    # A sample waits this long inside the engine for the next paced slot (steady flow spaces
    # requests a few seconds apart) instead of reporting a wait to the batch; cooldowns after a
    # failure are still reported as waits.
    pace_wait_seconds: float = Field(default=5, ge=0)
    stuck_after_minutes: float = Field(default=10, gt=0)
    heartbeat_seconds: float = Field(default=15, gt=0, le=30)
    storage_retry_seconds: float = Field(default=5, gt=0, le=300)


class AppConfig(_Strict):
    engine: EngineConfig = EngineConfig()
    batch: BatchConfig = BatchConfig()
    providers: dict[str, ProviderConfig]

    def provider(self, name: str) -> ProviderConfig | None:
        return self.providers.get(name)

    def cost(self, provider: str | None, model: str | None, prompt_tokens: int | None,
             completion_tokens: int | None) -> float:
        """USD for these tokens at the model's configured price (0 for a model not configured)."""
        found = self.providers.get(provider or "")
        entry = found.model(model) if found is not None and model else None
        return entry.price.cost(prompt_tokens, completion_tokens) if entry is not None else 0.0


def _merge(base: Any, override: Any) -> Any:
    """Deep-merge mappings key by key; anything else in the override replaces the base."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = _merge(base[key], value) if key in base else value
        return merged
    return copy.deepcopy(override)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"configuration file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return data


def _location(loc: tuple[Any, ...], raw: Mapping[str, Any]) -> str:
    """'providers.groq.models[2].limits.rpm', with the model id where there is one."""
    parts: list[str] = []
    node: Any = raw
    for item in loc:
        if isinstance(item, int):
            label = f"[{item}]"
            if isinstance(node, list) and item < len(node) and isinstance(node[item], dict) and "id" in node[item]:
                label = f"[{item}:{node[item]['id']}]"
            parts.append(label)
            node = node[item] if isinstance(node, list) and item < len(node) else None
        else:
            parts.append(f".{item}" if parts else str(item))
            node = node.get(item) if isinstance(node, dict) else None
    return "".join(parts)


def _check_references(config: AppConfig) -> None:
    providers = config.providers
    if not providers:
        raise ConfigError("providers: at least one provider must be declared")
    engine = config.engine
    if engine.default_provider not in providers:
        raise ConfigError(f"engine.default_provider: unknown provider {engine.default_provider!r}")
    seen: set[str] = set()
    for name in engine.provider_order:
        if name not in providers:
            raise ConfigError(f"engine.provider_order: unknown provider {name!r}")
        if name in seen:
            raise ConfigError(f"engine.provider_order: {name!r} appears twice (a cycle in the failover order)")
        seen.add(name)
    for name, provider in providers.items():
        if not provider.models:
            raise ConfigError(f"providers.{name}.models: the fallback order is empty")
        ids: set[str] = set()
        for model in provider.models:
            if model.id in ids:
                raise ConfigError(
                    f"providers.{name}.models: {model.id!r} appears twice (a cycle in the fallback order)")
            ids.add(model.id)
        if provider.kind == "openai" and not (provider.base_url or provider.base_url_env):
            raise ConfigError(f"providers.{name}.base_url: an openai-compatible provider needs a base URL")
        if provider.requires_key and not provider.api_key_env:
            raise ConfigError(f"providers.{name}.api_key_env: required unless requires_key is false")
    for key in engine.cooldowns:
        if key not in DEFAULT_COOLDOWNS:
            raise ConfigError(f"engine.cooldowns.{key}: unknown failure category")


def parse_config(raw: Mapping[str, Any]) -> AppConfig:
    """Validate a configuration mapping (already merged)."""
    try:
        config = AppConfig.model_validate(raw)
    except ValidationError as exc:
        messages = []
        for err in exc.errors():
            where = _location(tuple(err["loc"]), raw)
            value = err.get("input")
            shown = f" (got {value!r})" if not isinstance(value, (dict, list)) else ""
            messages.append(f"{where}: {err['msg']}{shown}")
        raise ConfigError("invalid configuration: " + "; ".join(messages)) from None
    _check_references(config)
    return config


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None,
                overrides: Mapping[str, Any] | None = None) -> AppConfig:
    """The shipped configuration, merged with the user's file and then with `overrides`."""
    raw = _read_yaml(SHIPPED_CONFIG)
    user_path = path or (env or {}).get(USER_CONFIG_ENV)
    if user_path:
        raw = _merge(raw, _read_yaml(Path(user_path)))
    if overrides:
        raw = _merge(raw, dict(overrides))
    return parse_config(raw)
