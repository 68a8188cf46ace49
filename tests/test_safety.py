"""Our own bugs are never taken for provider failures, and absurd wait hints never become cooldowns."""
from __future__ import annotations

import math

import pytest

from errors import Category, classify
from fallback.router import Stopped
from simulator.server import groq_error
from tests.conftest import request

GENERATE = {"practice_area": "Tort Law", "topic": "Nuisance", "difficulty": "basic"}


@pytest.mark.parametrize("exc", [ValueError("Invalid API key format"), RuntimeError("rate limit table is empty"),
                                 KeyError("model not found"), TypeError("request timed out")])
def test_an_exception_of_our_own_is_never_read_by_its_message(exc):
    failure = classify(exc)
    assert failure.category == Category.UNKNOWN and failure.reason == "internal"


def test_a_bug_that_mentions_an_api_key_stops_the_run_and_disables_nothing(fake, make_engine, monkeypatch):
    engine = make_engine()
    import generation.engine as engine_module

    def broken(text, spec):
        raise ValueError("Invalid API key format")

    monkeypatch.setattr(engine_module, "parse_sample", broken)
    with pytest.raises(Stopped):
        engine.generate(request("groq"))
    assert engine.provider_state("groq")["state"] == "ok" and engine.provider_state("cerebras")["state"] == "ok"
    monkeypatch.undo()
    assert engine.generate(request("groq")).provider == "groq"


# (headers, the category's default cooldown in the fast test config: 5 s for a rate limit, 60 s for
# a daily quota, which Groq's exhausted per-day request window means)
ABSURD = [({"retry-after": "inf"}, 5), ({"retry-after": "nan"}, 5), ({"retry-after": "-30"}, 5),
          ({"retry-after": "1e400"}, 5), ({"retry-after": "2300190983"}, 5), ({"retry-after-ms": "inf"}, 5),
          ({"retry-after": "Fri, 31 Dec 9999 23:59:59 GMT"}, 5),
          ({"x-ratelimit-reset-requests": "99999999h", "x-ratelimit-remaining-requests": "0"}, 60)]


@pytest.mark.parametrize("headers, default", ABSURD)
def test_an_absurd_wait_hint_falls_back_to_the_default_cooldown(client, fake, headers, default):
    """Every absurd hint becomes the category's default cooldown."""
    for model in ("g-large", "g-small", "c-large", "c-small"):
        fake.script(model, groq_error(429, "slow down", "rate_limit_exceeded", headers=headers))
    first = client.post("/api/generate", json=GENERATE)
    assert first.status_code == 503
    retry_after = first.headers.get("Retry-After")
    assert retry_after is None or 1 <= int(retry_after) <= default
    states = client.get("/api/stats/providers").get_json()
    text = str(states)
    assert "2300190983" not in text and "inf" not in text.replace("info", "")
    health = client.get("/api/health").get_json()["providers"]
    for provider in ("groq", "cerebras"):
        until = health[provider].get("seconds_left")
        assert until is None or until <= default + 0.5


def test_a_message_hint_of_years_is_not_a_cooldown(make_engine):
    from fallback.policy import Policy

    engine = make_engine()
    failure = classify(_status_error(429, "Rate limit reached. Please try again in 600000h."))
    assert failure.wait_seconds == 600000 * 3600            # what the provider said...
    decision = Policy(engine.config.engine).decide(failure, consecutive=1, in_sample=1)
    assert decision.cooldown_seconds == 5 and math.isfinite(decision.cooldown_seconds)  # ...is not what we do


def _status_error(status: int, message: str):
    import httpx
    from groq import APIStatusError

    response = httpx.Response(status, json={"error": {"message": message, "type": "requests",
                                                      "code": "rate_limit_exceeded"}},
                              request=httpx.Request("POST", "http://localhost/openai/v1/chat/completions"))
    return APIStatusError(message, response=response, body=response.json())


def test_every_model_of_the_first_provider_rate_limited_still_reaches_the_second(make_app, fake):
    """Nine Groq models, all answering 429, with max_attempts 8: the request still reaches Cerebras."""
    groq_models = [{"id": f"g-{i}", "limits": {}} for i in range(9)]
    client = make_app({"providers": {"groq": {"models": groq_models}}}).test_client()
    for model in groq_models:
        fake.always(model["id"], groq_error(429, "slow down", "rate_limit_exceeded", headers={"retry-after": "30"}))
    response = client.post("/api/generate", json={**GENERATE, "provider": "groq"})
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["provider"] == "cerebras"
    groq_tries = [a for a in body["attempts"] if a["provider"] == "groq"]
    assert len(groq_tries) == 3                     # engine.provider_failover_after, the default
    assert any(s["from_provider"] == "groq" and s["to_provider"] == "cerebras" for s in body["switches"])


def test_a_request_error_does_not_fail_over(make_engine, fake):
    """Only capacity failures count: a bad request is the request's fault, not the provider's."""
    from fallback.router import GaveUp

    engine = make_engine({"providers": {"groq": {"models": [{"id": f"g-{i}", "limits": {}} for i in range(5)]}}})
    for i in range(5):
        fake.always(f"g-{i}", groq_error(400, "bad request", "invalid_request_error"))
    with pytest.raises(GaveUp):
        engine.generate(request("groq"))
    assert {r.model for r in fake.requests} <= {f"g-{i}" for i in range(5)}   # never sent to Cerebras
