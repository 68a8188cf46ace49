"""From an API request to a stored sample: resolve and validate the request against the catalog and
the configuration, run the engine, and turn its result into a dataset record."""
from __future__ import annotations

import itertools
import threading
from typing import Any

from config.catalog import BALANCE, DEFAULT_SAMPLE_TYPE, DIFFICULTIES, SAMPLE_TYPES, TOPICS, Topic, find_topic, resolve_topic
from generation.engine import GenerationRequest, GenerationResult
from config.providers import STRATEGY_NAMES, AppConfig
from storage.store import new_sample_id


class RequestProblem(ValueError):
    """The request names something that does not exist; the message says what and where to look."""


class SampleTypeRotation:
    """`balance` cycles through the four sample types; shared by all requests."""

    def __init__(self) -> None:
        self._cycle = itertools.cycle(list(SAMPLE_TYPES))
        self._lock = threading.Lock()

    def next(self) -> str:
        with self._lock:
            return next(self._cycle)


def resolve_topic_label(practice_area: str | None, topic: str) -> Topic:
    found = resolve_topic(practice_area or "", topic) if practice_area else find_topic(topic)
    if found is None and not practice_area:
        matches = [t for t in TOPICS if t.topic.casefold() == topic.strip().casefold()]
        found = matches[0] if len(matches) == 1 else None
    if found is None:
        where = f" in practice area {practice_area!r}" if practice_area else ""
        raise RequestProblem(f"unknown topic {topic!r}{where}; GET /api/topics lists them")
    return found


def check_difficulty(difficulty: str | None, default: str | None = None) -> str | None:
    value = difficulty or default
    if value is not None and value not in DIFFICULTIES:
        raise RequestProblem(f"unknown difficulty {value!r}; use one of {', '.join(DIFFICULTIES)}")
    return value


def check_sample_type(sample_type: str | None, allow_balance: bool = True) -> str | None:
    if not sample_type:
        return None
    allowed = list(SAMPLE_TYPES) + ([BALANCE] if allow_balance else [])
    if sample_type not in allowed:
        raise RequestProblem(f"unknown sample_type {sample_type!r}; use one of {', '.join(allowed)}")
    return sample_type


def check_labels(fields: dict[str, Any]) -> None:
    """A sample's labels: its difficulty (when given) a known level, its sample type (when set) one
    of the four types. For every way a sample comes in but generation (which resolves its own)."""
    if "difficulty" in fields:
        if not fields["difficulty"]:
            raise RequestProblem("difficulty must not be empty")
        check_difficulty(fields["difficulty"])
    if fields.get("sample_type"):
        check_sample_type(fields["sample_type"], allow_balance=False)


def resolve_provider_model(config: AppConfig, provider: str | None, model: str | None) -> tuple[str | None, str | None]:
    provider = provider or None
    model = model or None
    if provider is not None and provider not in config.providers:
        raise RequestProblem(f"unknown provider {provider!r}; use one of {', '.join(config.providers)}")
    if model is None:
        return provider, None
    if provider is not None:
        if config.providers[provider].model(model) is None:
            raise RequestProblem(f"provider {provider!r} has no model {model!r}; GET /api/models lists them")
        return provider, model
    owners = [name for name, pc in config.providers.items() if pc.model(model) is not None]
    if not owners:
        raise RequestProblem(f"unknown model {model!r}; GET /api/models lists them")
    return owners[0], model


MAX_MODELS = 64   # entries in a request's own `models` order


def resolve_models(config: AppConfig, models: list[str] | None, provider: str | None = None,
                   model: str | None = None) -> tuple[tuple[str, str], ...] | None:
    """A request's own fallback order, `["groq/llama-3.3-70b-versatile", "cerebras/..."]`, as
    (provider, model) pairs checked against the configuration; None when not given. The provider is
    what comes before the first "/" (model ids may hold one: "groq/openai/gpt-oss-120b")."""
    if models is None:
        return None
    if not isinstance(models, list) or not all(isinstance(entry, str) for entry in models):
        raise RequestProblem('models must be a list of "provider/model" strings')
    if not models:
        raise RequestProblem("models must name at least one model; leave it out for the configured order")
    if len(models) > MAX_MODELS:
        raise RequestProblem(f"models lists {len(models)} entries; at most {MAX_MODELS}")
    if provider or model:
        raise RequestProblem("give either models (the whole order) or provider/model, not both")
    pairs: list[tuple[str, str]] = []
    for index, entry in enumerate(models):
        name, slash, model_id = entry.strip().partition("/")
        if not slash or not name or not model_id:
            raise RequestProblem(f'models[{index}]: {entry!r} is not "provider/model"')
        if name not in config.providers:
            raise RequestProblem(f"models[{index}]: unknown provider {name!r} in {entry!r}; "
                                 f"use one of {', '.join(config.providers)}")
        if config.providers[name].model(model_id) is None:
            raise RequestProblem(f"models[{index}]: unknown model {entry!r}; GET /api/models lists them")
        if (name, model_id) in pairs:
            raise RequestProblem(f"models[{index}]: {entry!r} appears twice")
        pairs.append((name, model_id))
    return tuple(pairs)


def check_strategy(config: AppConfig, strategy: str | None) -> str:
    """The strategy to use: the one given (checked) or the configured default."""
    if strategy is None or strategy == "":
        return config.engine.strategy
    if strategy not in STRATEGY_NAMES:
        raise RequestProblem(f"unknown strategy {strategy!r}; use one of {', '.join(STRATEGY_NAMES)}")
    return strategy


def model_names(pairs: tuple[tuple[str, str], ...] | None) -> list[str] | None:
    """(provider, model) pairs back as "provider/model" strings."""
    return [f"{p}/{m}" for p, m in pairs] if pairs is not None else None


def build_request(config: AppConfig, rotation: SampleTypeRotation, *, practice_area: str | None, topic: str,
                  difficulty: str | None, provider: str | None, model: str | None, sample_type: str | None,
                  instruction: str | None, models: list[str] | None = None,
                  strategy: str | None = None) -> GenerationRequest:
    """A validated engine request; raises RequestProblem naming what is wrong."""
    resolved = resolve_topic_label(practice_area, topic)
    level = check_difficulty(difficulty, resolved.difficulty)
    kind = check_sample_type(sample_type) or DEFAULT_SAMPLE_TYPE
    provider, model = resolve_provider_model(config, provider, model)
    order = resolve_models(config, models, provider, model)
    strategy = check_strategy(config, strategy)
    if kind == BALANCE:
        kind = rotation.next()
    return GenerationRequest(resolved, level or resolved.difficulty, kind, provider, model, instruction or None,
                             order, strategy)


def sample_record(result: GenerationResult, *, batch_id: str | None = None, simulated: bool = False) -> dict[str, Any]:
    """The dataset row for a generated sample: contract fields plus usage and provenance."""
    content = result.content
    return {
        "id": new_sample_id(result.provider),
        "question": content.question,
        "answer": content.answer,
        "reasoning": content.reasoning,
        "case_citation": content.case_citation,
        "topic": result.request.topic.label,
        "difficulty": result.request.difficulty,
        "sample_type": result.request.sample_type,
        "provider": result.provider,
        "model": result.model,
        "batch_id": batch_id,
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "latency": round(result.latency, 4),
        "attempts": len(result.attempts),
        "simulated": simulated,
    }
