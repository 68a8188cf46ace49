"""One client per provider, built once and shared by all threads.

Groq, Cerebras and any OpenAI-compatible server are reached through their official SDKs, all
built with `max_retries=0` (the fallback router is the only retry loop) and explicit connect/read
timeouts; Cerebras also with `warm_tcp_connection=False`. A call returns the completion text with
its usage, latency and rate-limit headers, or raises: the SDK's own errors for non-2xx responses,
`UnusableResponse` for a 2xx without a usable completion, `InvalidOutput` for empty content.
"""
from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import httpx

from config.providers import ModelConfig, ProviderConfig
from providers.exceptions import InvalidOutput, UnusableResponse


@dataclass(frozen=True)
class Completion:
    text: str
    provider: str
    model: str
    prompt_tokens: int | None
    completion_tokens: int | None
    latency: float
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    finish_reason: str | None = None

    @property
    def total_tokens(self) -> int | None:
        if self.prompt_tokens is None and self.completion_tokens is None:
            return None
        return (self.prompt_tokens or 0) + (self.completion_tokens or 0)


def _build_groq(api_key: str, base_url: str | None, timeout: httpx.Timeout) -> Any:
    from groq import Groq

    return Groq(api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout)


def _build_cerebras(api_key: str, base_url: str | None, timeout: httpx.Timeout) -> Any:
    from cerebras.cloud.sdk import Cerebras

    return Cerebras(api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout,
                    warm_tcp_connection=False)


def _build_openai(api_key: str, base_url: str | None, timeout: httpx.Timeout) -> Any:
    from openai import OpenAI

    return OpenAI(api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout)


SDK_BUILDERS: dict[str, Callable[[str, str | None, httpx.Timeout], Any]] = {
    "groq": _build_groq,
    "cerebras": _build_cerebras,
    "openai": _build_openai,
}


def fingerprint(secret: str | None) -> str:
    """A short, non-reversible tag of a key, to notice when it changes."""
    return hashlib.sha256(secret.encode()).hexdigest()[:12] if secret else ""


class ProviderClient:
    """A configured provider: settings resolved from the environment, SDK client built once."""

    def __init__(self, name: str, config: ProviderConfig, env: Mapping[str, str]):
        self.name = name
        self.config = config
        self.kind = config.kind
        key = env.get(config.api_key_env, "") if config.api_key_env else ""
        self._api_key = key.strip() or None
        base = env.get(config.base_url_env, "") if config.base_url_env else ""
        self.base_url = (base.strip() or config.base_url or None)
        self.key_fingerprint = fingerprint(self._api_key) + "|" + (self.base_url or "")
        self._sdk: Any = None
        self._lock = threading.Lock()

    @property
    def display_name(self) -> str:
        return self.config.name or self.name

    @property
    def configured(self) -> bool:
        return bool(self._api_key) or not self.config.requires_key

    @property
    def missing_setting(self) -> str | None:
        """The environment variable to set before this provider can be used."""
        return None if self.configured else self.config.api_key_env

    @property
    def secrets(self) -> tuple[str, ...]:
        return (self._api_key,) if self._api_key else ()

    def sdk(self) -> Any:
        """The SDK client, built on first use and then shared."""
        if self._sdk is None:
            with self._lock:
                if self._sdk is None:
                    if not self.configured:
                        raise RuntimeError(f"provider {self.name} is not configured "
                                           f"(set {self.config.api_key_env})")
                    connect, read = self.config.timeouts.connect or 5.0, self.config.timeouts.read or 60.0
                    self._sdk = SDK_BUILDERS[self.kind](
                        self._api_key or "not-needed", self.base_url, httpx.Timeout(read, connect=connect))
        return self._sdk

    def request_options(self, model: ModelConfig, json_mode: bool) -> dict[str, Any]:
        connect, read = self.config.timeout_for(model)
        options: dict[str, Any] = {
            "model": model.id,
            "temperature": self.config.temperature_for(model),
            "max_completion_tokens": self.config.completion_budget(model),
            "timeout": httpx.Timeout(read, connect=connect),
        }
        if json_mode and model.json_mode:
            options["response_format"] = {"type": "json_object"}
        return options

    def complete(self, model: ModelConfig, messages: list[dict[str, str]], json_mode: bool = True) -> Completion:
        """One chat completion; raises on any failure (see the module docstring)."""
        sdk = self.sdk()
        started = time.perf_counter()
        raw = sdk.chat.completions.with_raw_response.create(
            messages=messages, **self.request_options(model, json_mode))
        latency = time.perf_counter() - started
        headers = dict(raw.headers)
        return self._completion(raw.http_response, headers, model.id, latency)

    def _completion(self, response: httpx.Response, headers: dict[str, str], model_id: str,
                    latency: float) -> Completion:
        try:
            data = json.loads(response.text)
        except ValueError:
            raise UnusableResponse("response body is not JSON", body=response.text[:2000],
                                   headers=headers) from None
        if not isinstance(data, dict):
            raise UnusableResponse("response body is not a JSON object", body=data, headers=headers)
        choices = data.get("choices")
        if "error" in data and not choices:
            raise UnusableResponse("error body in a successful response", body=data, headers=headers)
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise UnusableResponse("response has no choices", body=data, headers=headers)
        choice = choices[0]
        message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
        text = _content_text(message.get("content"))
        finish = choice.get("finish_reason")
        if not text.strip():
            raise InvalidOutput(f"empty completion (finish_reason={finish})", raw_output=json.dumps(message)[:4000])
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        return Completion(
            text=text, provider=self.name, model=model_id,
            prompt_tokens=_int_or_none(usage.get("prompt_tokens")),
            completion_tokens=_int_or_none(usage.get("completion_tokens")),
            latency=latency, headers=headers, finish_reason=finish if isinstance(finish, str) else None)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def build_providers(providers: Mapping[str, ProviderConfig], env: Mapping[str, str]) -> dict[str, ProviderClient]:
    """A client for every declared provider; unconfigured ones report `configured == False`."""
    return {name: ProviderClient(name, config, env) for name, config in providers.items()}
