"""From an API request to a stored sample: resolve and validate the request against the catalog and
the configuration, run the engine, and turn its result into a dataset record."""
from __future__ import annotations

import itertools
import threading
from typing import Any

from config.catalog import BALANCE, DEFAULT_SAMPLE_TYPE, DIFFICULTIES, SAMPLE_TYPES, TOPICS, Topic, find_topic, resolve_topic
from generation.engine import GenerationRequest, GenerationResult
from config.providers import AppConfig
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


def build_request(config: AppConfig, rotation: SampleTypeRotation, *, practice_area: str | None, topic: str,
                  difficulty: str | None, provider: str | None, model: str | None, sample_type: str | None,
                  instruction: str | None) -> GenerationRequest:
    """A validated engine request; raises RequestProblem naming what is wrong."""
    resolved = resolve_topic_label(practice_area, topic)
    level = check_difficulty(difficulty, resolved.difficulty)
    kind = check_sample_type(sample_type) or DEFAULT_SAMPLE_TYPE
    if kind == BALANCE:
        kind = rotation.next()
    provider, model = resolve_provider_model(config, provider, model)
    return GenerationRequest(resolved, level or resolved.difficulty, kind, provider, model, instruction or None)


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
