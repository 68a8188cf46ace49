"""The engine end to end: real SDK clients, the local fake server, and the fallback router."""
from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from typing import Any

import pytest

from errors import Category
from fallback.router import (AllCooling, AttemptsExhausted, DeadlineExceeded, GaveUp, NoRecovery,
                             Stopped)
from generation.prompts import build_messages
from simulator.content import make_sample
from simulator.server import CEREBRAS_PATH, GROQ_PATH, Reply, cerebras_error, groq_error, refused_url
from tests.conftest import ManualClock, request

SERVER_ERROR = groq_error(500, "Internal Server Error", type_="internal_server_error")


def calls(fake):
    return [(r.path, r.model) for r in fake.requests]


def test_success_on_the_requested_model(fake, make_engine):
    engine = make_engine()
    result = engine.generate(request("groq", "g-small"))
    assert (result.provider, result.model) == ("groq", "g-small")
    assert result.prompt_tokens > 0 and result.completion_tokens > 0 and result.latency > 0
    assert result.request.topic.label == "Tort Law - Nuisance" and result.request.difficulty == "intermediate"
    assert calls(fake) == [(GROQ_PATH, "g-small")]
    body = fake.requests[0].body
    assert body["response_format"] == {"type": "json_object"} and body["max_completion_tokens"] == 2048
    assert result.switches == []


def test_rate_limit_moves_to_the_next_model_and_records_the_switch(fake, make_engine):
    engine = make_engine()
    seen = []
    engine.on_switch(seen.append)
    fake.script("g-large", groq_error(429, "Rate limit reached", "rate_limit_exceeded", headers={"retry-after": "3"}))
    result = engine.generate(request("groq"))
    assert result.model == "g-small"
    [event] = result.switches
    assert (event.from_provider, event.from_model, event.to_provider, event.to_model) == \
        ("groq", "g-large", "groq", "g-small")
    assert event.category == "rate_limit" and "Rate limit reached" in event.reason and event.timestamp
    assert seen == [event]
    state = engine.model_state("groq", "g-large")
    assert state["state"] == "cooling" and state["category"] == "rate_limit" and 0 < state["seconds_left"] <= 3
    assert "until" in state and engine.model_state("groq", "g-small")["state"] == "ok"


def test_groq_fails_over_to_cerebras(fake, make_engine):
    engine = make_engine()
    fake.always("g-large", SERVER_ERROR)
    fake.always("g-small", Reply(status=498, body={"error": {"message": "capacity"}}))
    result = engine.generate(request("groq"))
    assert (result.provider, result.model) == ("cerebras", "c-large")
    assert calls(fake) == [(GROQ_PATH, "g-large"), (GROQ_PATH, "g-small"), (CEREBRAS_PATH, "c-large")]
    assert [(e.from_provider, e.to_provider) for e in result.switches] == [("groq", "groq"), ("groq", "cerebras")]
    assert [e.category for e in result.switches] == ["server_error", "model_unavailable"]


def test_cerebras_fails_over_to_groq_and_a_rejected_key_disables_the_provider(fake, make_engine, env):
    engine = make_engine()
    fake.always("c-large", cerebras_error(401, "Wrong API Key", "wrong_api_key"))
    result = engine.generate(request("cerebras"))
    assert (result.provider, result.model) == ("groq", "g-large")
    assert fake.count("c-small") == 0  # next provider at once: the key is bad for every model
    assert engine.provider_state("cerebras")["state"] == "disabled"
    assert engine.model_state("cerebras", "c-small")["state"] == "disabled"

    engine.generate(request("cerebras"))
    assert fake.count("c-large") == 1  # still disabled: not asked again

    fake.always("c-large", None)
    assert engine.reload_environment({**env, "CEREBRAS_API_KEY": "csk-a-brand-new-key-0000000000"}) == ["cerebras"]
    result = engine.generate(request("cerebras"))
    assert (result.provider, result.model) == ("cerebras", "c-large")


def test_one_sample_never_tries_the_same_pair_twice(fake, make_engine):
    engine = make_engine()
    for model in ("g-large", "g-small", "c-large", "c-small"):
        fake.always(model, SERVER_ERROR)
    with pytest.raises(AttemptsExhausted) as caught:
        engine.generate(request("groq"))
    called = fake.models_called()
    assert sorted(called) == ["c-large", "c-small", "g-large", "g-small"]  # each exactly once
    assert len(caught.value.attempts) == 4 and caught.value.retry_after is not None
    assert caught.value.last_failure.category == Category.SERVER_ERROR


def test_non_critical_failures_keep_the_model_in_rotation_until_three_in_a_row(fake, make_engine):
    clock = ManualClock()
    engine = make_engine(clock=clock, backoff={"base_seconds": 1, "max_seconds": 1})
    prose = Reply(content="Sorry, I can only write prose today.")
    fake.always("g-large", prose)
    for round_ in range(1, 4):
        result = engine.generate(request("groq"))
        assert result.model == "g-small"
        assert fake.count("g-large") == round_
        state = engine.model_state("groq", "g-large")
        assert state["state"] == "cooling"
        if round_ < 3:
            assert state["reason"] == "backoff" and state["failures_in_a_row"] == round_
            clock.advance(1.01)  # the retry backoff passes; the same model is retried
    assert state["reason"] is None and state["category"] == "invalid_output"  # now switched off
    clock.advance(1.01)
    engine.generate(request("groq"))
    assert fake.count("g-large") == 3  # cooled down: not retried within its cooldown
    rejected = engine.rejected_outputs()
    assert rejected[-1]["raw_output"] == "Sorry, I can only write prose today."
    assert rejected[-1]["model"] == "g-large" and "no JSON object" in rejected[-1]["reason"]


def test_cooldown_expiry_brings_a_model_back(fake, make_engine):
    clock = ManualClock()
    engine = make_engine(clock=clock)
    fake.script("g-large", groq_error(429, "Rate limit reached", "rate_limit_exceeded", headers={"retry-after": "30"}))
    assert engine.generate(request("groq")).model == "g-small"
    assert engine.generate(request("groq")).model == "g-small"
    assert fake.count("g-large") == 1
    clock.advance(29.9)
    assert engine.generate(request("groq")).model == "g-small"
    clock.advance(0.2)
    assert engine.model_state("groq", "g-large")["state"] == "ok"
    assert engine.generate(request("groq")).model == "g-large"


def test_skipping_a_cooling_preferred_model_is_recorded(fake, make_engine):
    engine = make_engine(clock=ManualClock())
    fake.script("g-large", groq_error(503, "Service Unavailable", headers={"retry-after": "30"}))
    engine.generate(request("groq"))
    result = engine.generate(request("groq"))
    [event] = result.switches
    assert (event.from_model, event.to_model, event.category) == ("g-large", "g-small", "server_error")
    assert event.reason.startswith("cooling:")


def test_everything_cooling_reports_the_earliest_recovery(fake, make_engine):
    engine = make_engine(clock=ManualClock())
    for model, wait in (("g-large", 40), ("g-small", 25), ("c-large", 90), ("c-small", 60)):
        fake.script(model, groq_error(429, "Rate limit reached", "rate_limit_exceeded", headers={"retry-after": str(wait)}))
    with pytest.raises(AttemptsExhausted):
        engine.generate(request("groq"))
    with pytest.raises(AllCooling) as caught:
        engine.generate(request("groq"))
    assert caught.value.retry_after == pytest.approx(25) and not caught.value.permanent
    assert len(fake.requests) == 4  # nothing was sent while everything cooled


def test_the_router_can_wait_for_a_recovery_within_the_callers_allowance(fake, make_engine):
    engine = make_engine(overrides={"providers": {"cerebras": {"models": [{"id": "c-large"}]},
                                                  "groq": {"models": [{"id": "g-large"}]}}})
    fake.script("g-large", groq_error(429, "slow", "rate_limit_exceeded", headers={"retry-after-ms": "300"}))
    fake.script("c-large", cerebras_error(429, "slow", "request_quota_exceeded", headers={"retry-after-ms": "300"}))
    with pytest.raises(AttemptsExhausted):
        engine.generate(request("groq"))
    started = time.perf_counter()
    result = engine.generate(request("groq"), max_wait=5)
    assert result.model == "g-large" and 0.1 < time.perf_counter() - started < 3


def test_the_deadline_bounds_a_sample(fake, make_engine):
    engine = make_engine(sample_deadline_seconds=1.0, overrides={"providers": {
        "groq": {"timeouts": {"read": 0.6}}, "cerebras": {"timeouts": {"read": 0.6}}}})
    for model in ("g-large", "g-small", "c-large", "c-small"):
        fake.always(model, Reply(hang=True))
    started = time.perf_counter()
    with pytest.raises(DeadlineExceeded):
        engine.generate(request("groq"))
    assert time.perf_counter() - started < 2.5
    assert len(fake.requests) == 2


def test_attempts_are_bounded(fake, make_engine):
    engine = make_engine(max_attempts=2)
    for model in ("g-large", "g-small", "c-large", "c-small"):
        fake.always(model, SERVER_ERROR)
    with pytest.raises(AttemptsExhausted, match="2 attempts"):
        engine.generate(request("groq"))
    assert len(fake.requests) == 2


def test_no_sdk_level_retries(fake, make_engine):
    engine = make_engine(overrides={"providers": {"groq": {"timeouts": {"read": 0.3}}}})
    fake.script("g-large", groq_error(503, "Service Unavailable", headers={"retry-after": "0"}))
    fake.script("g-small", Reply(hang=True))
    fake.script("c-large", groq_error(429, "slow", "rate_limit_exceeded", headers={"retry-after": "0"}))
    result = engine.generate(request("groq"))
    assert result.model == "c-small"
    assert calls(fake) == [(GROQ_PATH, "g-large"), (GROQ_PATH, "g-small"), (CEREBRAS_PATH, "c-large"),
                           (CEREBRAS_PATH, "c-small")]


def test_a_refused_connection_moves_to_the_next_provider(fake, make_engine):
    engine = make_engine(env_overrides={"CEREBRAS_BASE_URL": refused_url()})
    fake.always("g-large", SERVER_ERROR)
    fake.always("g-small", SERVER_ERROR)
    with pytest.raises(AttemptsExhausted):
        engine.generate(request("cerebras"))
    assert fake.models_called() == ["g-large", "g-small"]  # c-small skipped: the provider is unreachable
    assert engine.provider_state("cerebras")["state"] == "cooling"
    assert engine.provider_state("cerebras")["category"] == "connection_error"


def test_hang_then_think_wrapped_json_then_error_body(fake, make_engine):
    engine = make_engine(overrides={"providers": {"groq": {"timeouts": {"read": 0.3}}}})
    prompt = build_messages(request().spec)[1]["content"]
    sample = make_sample(prompt, random.Random(1))
    fake.script("g-large", Reply(hang=True))
    fake.script("g-small", Reply(status=200, body={"error": {"message": "upstream failure", "type": "server_error"}}))
    fake.script("c-large", Reply(content="<think>Let me plan.</think>\n```json\n" + json.dumps(sample) + "\n```"))
    result = engine.generate(request("groq"))
    assert result.model == "c-large" and result.content.question == sample["question"]
    assert [a.category for a in result.attempts] == ["timeout", "server_error", None]


def test_give_up_when_every_model_rejects_the_request(fake, make_engine):
    engine = make_engine()
    for model in ("g-large", "g-small", "c-large", "c-small"):
        fake.always(model, groq_error(400, "Invalid request: messages too odd"))
    with pytest.raises(GaveUp):
        engine.generate(request("groq"))
    assert len(fake.requests) == 3


def test_stop_on_a_fault_in_our_own_code(fake, make_engine, monkeypatch):
    engine = make_engine()
    import generation.engine as engine_module

    def broken(text, spec):
        raise KeyError("bug")

    monkeypatch.setattr(engine_module, "parse_sample", broken)
    with pytest.raises(Stopped):
        engine.generate(request("groq"))
    assert len(fake.requests) == 1


def test_no_provider_configured_names_the_missing_variables(make_engine):
    engine = make_engine(env_overrides={"GROQ_API_KEY": "", "CEREBRAS_API_KEY": ""})
    with pytest.raises(NoRecovery) as caught:
        engine.generate(request())
    assert "GROQ_API_KEY" in str(caught.value) and "CEREBRAS_API_KEY" in str(caught.value)
    assert caught.value.permanent
    assert engine.provider_state("groq") == {"state": "not_configured", "missing": "GROQ_API_KEY"}


def test_every_model_gone_means_no_recovery(fake, make_engine):
    engine = make_engine()
    for model in ("g-large", "g-small", "c-large", "c-small"):
        fake.always(model, groq_error(404, f"The model `{model}` does not exist", "model_not_found"))
    with pytest.raises(NoRecovery):
        engine.generate(request())
    assert len(fake.requests) == 4
    with pytest.raises(NoRecovery) as caught:
        engine.generate(request())
    assert len(fake.requests) == 4 and caught.value.permanent


def test_an_extra_openai_compatible_provider_takes_part_in_fallback(fake, make_engine):
    engine = make_engine(overrides={
        "engine": {"provider_order": ["groq", "cerebras", "local"]},
        "providers": {"local": {"kind": "openai", "name": "Local", "base_url": fake.url + "/v1",
                                "requires_key": False, "models": [{"id": "local-8b", "json_mode": False}]}}})
    for model in ("g-large", "g-small", "c-large", "c-small"):
        fake.always(model, SERVER_ERROR)
    result = engine.generate(request("groq"))
    assert (result.provider, result.model) == ("local", "local-8b")
    assert fake.requests[-1].path == "/v1/chat/completions" and "response_format" not in fake.requests[-1].body


def test_thinking_models_get_their_budget_and_no_json_mode(fake, make_engine):
    engine = make_engine(overrides={"providers": {"cerebras": {"models": [
        {"id": "c-think", "thinking": True, "json_mode": False, "max_completion_tokens": 8192}]}}})
    engine.generate(request("cerebras"))
    body = fake.requests[0].body
    assert body["model"] == "c-think" and body["max_completion_tokens"] == 8192 and "response_format" not in body


def test_proactive_pacing_avoids_429s(fake, make_engine):
    engine = make_engine(overrides={"providers": {"groq": {"models": [
        {"id": "g-large", "limits": {"rpm": 2}}, {"id": "g-small", "limits": {}}]}}})
    fake.limit("g-large", rpm=2)
    models = [engine.generate(request("groq")).model for _ in range(5)]
    # rpm 2 is one request every 30 s, not two at once: the rest go to the next model
    assert models == ["g-large", "g-small", "g-small", "g-small", "g-small"]
    report = engine.report()["groq"]["models"]["g-large"]["stats"]
    assert report["failures"] == 0 and report["successes"] == 1
    # The move away from the exhausted budget is recorded, with its reason.
    result = engine.generate(request("groq"))
    assert result.switches[0].reason.startswith("out of budget")


def test_concurrent_samples_share_the_engine(fake, make_engine):
    engine = make_engine(overrides={"providers": {"groq": {"models": [
        {"id": "g-large", "limits": {"rpm": 5}}, {"id": "g-small", "limits": {"rpm": 5}}]}}})
    fake.latency = 0.05
    results, errors = [], []

    def worker():
        try:
            results.append(engine.generate(request("groq"), max_wait=5))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 12
    by_model = Counter(r.model for r in results)
    assert by_model["g-large"] <= 5 and by_model["g-small"] <= 5  # the shared limits hold across threads
    assert sum(by_model.values()) == 12 and len(fake.requests) == 12


def test_report_lists_every_model_with_state_and_stats(fake, make_engine):
    engine = make_engine()
    fake.script("g-large", SERVER_ERROR)
    engine.generate(request("groq"))
    report = engine.report()
    assert set(report) == {"groq", "cerebras"}
    large = report["groq"]["models"]["g-large"]
    assert large["state"] == "cooling" and large["stats"]["failures_by_category"] == {"server_error": 1}
    small = report["groq"]["models"]["g-small"]["stats"]
    assert small["successes"] == 1 and small["latency_seconds"]["p50"] > 0 and small["completion_tokens"] > 0


def test_schema_invalid_output_moves_on_and_is_kept_for_diagnosis(fake, make_engine):
    engine = make_engine()
    invalid = json.dumps({"question": "What is nuisance in English law today?", "answer": "It is a tort.",
                          "reasoning": "Step 1: think.", "case_citation": "Fearn v Tate [2023] UKSC 4"})
    fake.script("g-large", Reply(content=invalid))
    result = engine.generate(request("groq"))
    assert result.model == "g-small"
    assert result.attempts[0].category == "invalid_output" and "Step 4" in result.attempts[0].message
    assert result.attempts[0].prompt_tokens > 0  # the rejected answer still used tokens
    assert engine.rejected_outputs()[-1]["raw_output"] == invalid


def test_cerebras_token_budget_is_charged_up_front_groq_by_usage(fake, make_engine):
    engine = make_engine(overrides={"providers": {
        "groq": {"models": [{"id": "g-large", "limits": {"tpm": 100000}}]},
        "cerebras": {"models": [{"id": "c-large", "limits": {"tpm": 100000}}], "max_completion_tokens": 4000}}},
        clock=ManualClock())   # no time passes, so nothing drains between the calls and the reading
    groq = engine.generate(request("groq"))
    cerebras = engine.generate(request("cerebras"))
    groq_left = engine.limiter.snapshot("groq", "g-large")["tpm"]["remaining"]
    cerebras_left = engine.limiter.snapshot("cerebras", "c-large")["tpm"]["remaining"]
    assert groq_left == pytest.approx(100000 - groq.total_tokens)        # settled to the reported usage
    assert cerebras_left < 100000 - 4000 < 100000 - cerebras.total_tokens  # prompt + budget stays charged


def test_an_untried_model_takes_one_request_at_a_time(fake, make_engine):
    engine = make_engine()
    fake.always("g-large", groq_error(404, "The model `g-large` does not exist", "model_not_found"))
    fake.latency = 0.2
    results = []
    threads = [threading.Thread(target=lambda: results.append(engine.generate(request("groq"), max_wait=5)))
               for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 6 and fake.count("g-large") == 1  # the other five never piled onto it
    assert engine.model_state("groq", "g-large")["reason"] == "model_gone"


class _Interrupted(BaseException):
    """An exception nothing in the router expects (like KeyboardInterrupt or SystemExit)."""


def _fails_once(exc: BaseException, real: Any = None) -> Any:
    """A stand-in that raises `exc` the first time, then behaves like `real` (or returns None)."""
    raised = []

    def stand_in(*args: Any, **kwargs: Any) -> Any:
        if not raised:
            raised.append(exc)
            raise exc
        return real(*args, **kwargs) if real is not None else None

    return stand_in


def _raise(exc: BaseException) -> Any:
    raise exc


@pytest.mark.parametrize("where", ["call", "after_success", "reserve"])
def test_an_unexpected_exception_never_keeps_the_half_open_probe(fake, make_engine, monkeypatch, where):
    """Whatever an attempt raises (a BaseException in the call, a bug in our own bookkeeping after a
    success, a bug while reserving budget), the untried model's one probe is given back: the next
    request may go to it instead of waiting for a probe that will never end."""
    engine = make_engine()
    call = None
    if where == "call":
        call, expected = (lambda client, model: _raise(_Interrupted("stop"))), _Interrupted
    elif where == "after_success":
        monkeypatch.setattr(engine.limiter, "settle", _fails_once(RuntimeError("bug after success"), engine.limiter.settle))
        expected = RuntimeError
    else:
        monkeypatch.setattr(engine.limiter, "reserve", _fails_once(KeyError("bug in reserve"), engine.limiter.reserve))
        expected = KeyError
    with pytest.raises(expected):
        if call is not None:
            engine.router.run(call, prompt_tokens=10, provider="groq", model="g-large")
        else:
            engine.generate(request("groq", "g-large"))
    assert engine.health.try_probe("groq", "g-large")     # free: nobody holds the probe
    engine.health.end_probe("groq", "g-large")
    assert engine.generate(request("groq", "g-large")).model == "g-large"


def test_a_run_never_releases_a_probe_it_does_not_hold(make_engine):
    """A run that went out on a proven model must not free the probe another run took after the
    model was switched off meanwhile: that would let a second request onto an unproven model."""
    engine = make_engine()
    engine.health.record_success("groq", "g-large")            # proven: runs go out without a probe
    claims = []

    def call(client, model):
        engine.health.cool("groq", "g-large", 0.0, _failure(), switched=True)  # switched off: unproven again
        claims.append(engine.health.claim_probe("groq", "g-large"))  # another run takes the probe
        raise _Interrupted("stop")

    with pytest.raises(_Interrupted):
        engine.router.run(call, prompt_tokens=10, provider="groq", model="g-large")
    assert claims == ["owned"]
    assert engine.health.claim_probe("groq", "g-large") == "busy"   # the other run still holds it


def _failure():
    from errors import Failure, Scope

    return Failure(Category.SERVER_ERROR, Scope.MODEL, None, "test")
