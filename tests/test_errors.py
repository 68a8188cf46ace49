"""Failure classification, with the real SDK clients talking to the local fake server."""
from __future__ import annotations

import time
from email.utils import formatdate

import httpx
import pytest

from errors import Category, InvalidOutput, Scope, UnusableResponse, classify, redact
from config.providers import load_config
from providers.client import ProviderClient
from simulator.server import Reply, cerebras_error, groq_error, refused_url
from tests.conftest import CEREBRAS_KEY, GROQ_KEY

MODEL = "m-test"


def client_for(kind: str, base_url: str, read_timeout: float = 1.0) -> ProviderClient:
    config = load_config(overrides={"providers": {
        kind: {"timeouts": {"connect": 1, "read": read_timeout}, "models": [{"id": MODEL}]}}})
    env = {"GROQ_API_KEY": GROQ_KEY, "CEREBRAS_API_KEY": CEREBRAS_KEY,
           "GROQ_BASE_URL": base_url, "CEREBRAS_BASE_URL": base_url}
    return ProviderClient(kind, config.providers[kind], env)


def failure_of(kind: str, base_url: str, read_timeout: float = 1.0):
    client = client_for(kind, base_url, read_timeout)
    with pytest.raises(Exception) as caught:
        client.complete(client.config.models[0], [{"role": "user", "content": "hi"}])
    return classify(caught.value, kind, client.secrets), caught.value


GROQ_TPD = ("Rate limit reached for model `llama-3.3-70b-versatile` in organization `org_01kjh7p9n8f1qs6n` "
            "service tier `on_demand` on tokens per day (TPD): Limit 100000, Used 97050, Requested 3619. "
            "Please try again in 6h12m3s. Need more tokens?")
GROQ_TPM = ("Rate limit reached for model `llama-3.1-8b-instant` on tokens per minute (TPM): Limit 6000, "
            "Used 5034, Requested 1443. Please try again in 5.289s.")


@pytest.mark.parametrize("reply, category, wait", [
    (groq_error(429, "slow down", "rate_limit_exceeded", headers={"retry-after": "7"}), Category.RATE_LIMIT, 7.0),
    (groq_error(429, "slow down", "rate_limit_exceeded", headers={"retry-after-ms": "1250", "retry-after": "9"}),
     Category.RATE_LIMIT, 1.25),
    (groq_error(429, GROQ_TPM, "rate_limit_exceeded", "tokens"), Category.RATE_LIMIT, 5.289),
    (groq_error(429, GROQ_TPD, "rate_limit_exceeded", "tokens"), Category.QUOTA_EXHAUSTED, 22323.0),
    (groq_error(429, "Rate limit reached", "rate_limit_exceeded", headers={
        "x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "7.66s",
        "x-ratelimit-remaining-requests": "100", "x-ratelimit-reset-requests": "2m59.56s"}),
     Category.RATE_LIMIT, 7.66),
    (groq_error(429, "Rate limit reached", "rate_limit_exceeded", headers={
        "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "2m59.56s"}),
     Category.QUOTA_EXHAUSTED, 179.56),
    (Reply(status=498, body={"error": {"message": "flex tier capacity exceeded", "type": "capacity"}}),
     Category.MODEL_UNAVAILABLE, None),
    (groq_error(500, "Internal Server Error", type_="internal_server_error"), Category.SERVER_ERROR, None),
    (Reply(status=502, body="<html>Bad Gateway</html>", content_type="text/html"), Category.SERVER_ERROR, None),
    (groq_error(503, "Service Unavailable", headers={"retry-after": "3"}), Category.SERVER_ERROR, 3.0),
    (groq_error(401, "Invalid API Key", "invalid_api_key"), Category.AUTHENTICATION, None),
    (groq_error(403, "Forbidden", "permission_denied"), Category.AUTHENTICATION, None),
    (groq_error(404, "The model `m-test` does not exist or you do not have access to it.", "model_not_found"),
     Category.MODEL_UNAVAILABLE, None),
    (groq_error(400, "The model `mixtral-8x7b-32768` has been decommissioned and is no longer supported.",
                "model_decommissioned"), Category.MODEL_UNAVAILABLE, None),
    (groq_error(400, "Failed to generate JSON.", "json_validate_failed"), Category.INVALID_OUTPUT, None),
    (groq_error(413, "Request too large for model on tokens per minute (TPM): Limit 6000, Requested 8000",
                "rate_limit_exceeded", "tokens"), Category.BAD_REQUEST, None),
    (groq_error(400, "'temperature' for model llama must be less than or equal to 2"), Category.BAD_REQUEST, None),
    (Reply(status=200, body="upstream says hello", content_type="text/plain"), Category.SERVER_ERROR, None),
    (Reply(status=200, body={"error": {"message": "Rate limit reached, try again in 2s",
                                       "code": "rate_limit_exceeded"}}), Category.RATE_LIMIT, 2.0),
    (Reply(status=200, body={"error": {"message": "something odd", "type": "server_error"}}), Category.SERVER_ERROR, None),
])
def test_groq_failures(fake, reply, category, wait):
    fake.script(MODEL, reply)
    failure, _ = failure_of("groq", fake.url)
    assert failure.category == category, failure
    assert failure.wait_seconds == (pytest.approx(wait) if wait is not None else None)
    assert failure.scope == (Scope.PROVIDER if category == Category.AUTHENTICATION else Scope.MODEL)
    assert fake.count(MODEL) == 1  # the SDK never retried on its own


def test_retry_after_as_http_date(fake):
    when = formatdate(time.time() + 40, usegmt=True)
    fake.script(MODEL, groq_error(429, "slow down", "rate_limit_exceeded", headers={"retry-after": when}))
    failure, _ = failure_of("groq", fake.url)
    assert failure.category == Category.RATE_LIMIT
    assert 35 <= failure.wait_seconds <= 41


@pytest.mark.parametrize("reply, category, wait", [
    (cerebras_error(429, "Requests per minute limit exceeded - too many requests sent.", "request_quota_exceeded",
                    "too_many_requests_error", headers={"retry-after": "2"}), Category.RATE_LIMIT, 2.0),
    (cerebras_error(429, "Tokens per day limit exceeded - too many tokens processed.", "token_quota_exceeded",
                    "too_many_requests_error", headers={"x-ratelimit-remaining-tokens-day": "0",
                                                        "x-ratelimit-reset-tokens-day": "33011.382867"}),
     Category.QUOTA_EXHAUSTED, 33011.382867),
    (cerebras_error(429, "Too many requests", "request_quota_exceeded", "too_many_requests_error",
                    headers={"x-ratelimit-remaining-requests-day": "0",
                             "x-ratelimit-reset-requests-day": "120.5"}), Category.QUOTA_EXHAUSTED, 120.5),
    (cerebras_error(402, "Payment required", "payment_required"), Category.AUTHENTICATION, None),
    (cerebras_error(401, "Wrong API Key", "wrong_api_key", "invalid_request_error"), Category.AUTHENTICATION, None),
    (cerebras_error(404, "Model qwen-9 does not exist or you do not have access to it.", "model_not_found",
                    "not_found_error"), Category.MODEL_UNAVAILABLE, None),
    (cerebras_error(503, "We're experiencing high traffic right now! Please try again soon.", "queue_exceeded",
                    "too_many_requests_error"), Category.SERVER_ERROR, None),
    (cerebras_error(500, "Encountered a server error, please try again.", type_="internal_server_error"),
     Category.SERVER_ERROR, None),
])
def test_cerebras_failures(fake, reply, category, wait):
    fake.script(MODEL, reply)
    failure, _ = failure_of("cerebras", fake.url)
    assert failure.category == category, failure
    assert failure.wait_seconds == (pytest.approx(wait) if wait is not None else None)
    assert fake.count(MODEL) == 1


def test_cerebras_status_in_body_does_not_hide_the_http_status(fake):
    # The SDK rewrites the status from the body (400 here) and raises BadRequestError;
    # the HTTP status (503) is what happened.
    fake.script(MODEL, cerebras_error(503, "Service temporarily unavailable", body_status=400))
    failure, exc = failure_of("cerebras", fake.url)
    assert type(exc).__name__ == "BadRequestError" and exc.status_code == 400
    assert failure.status == 503 and failure.category == Category.SERVER_ERROR

    fake.script(MODEL, cerebras_error(429, "Requests per minute limit exceeded", "request_quota_exceeded",
                                      body_status=400, headers={"retry-after": "4"}))
    failure, _ = failure_of("cerebras", fake.url)
    assert failure.category == Category.RATE_LIMIT and failure.wait_seconds == 4.0


def test_hang_past_the_read_timeout_is_a_timeout(fake):
    fake.script(MODEL, Reply(hang=True))
    started = time.perf_counter()
    failure, _ = failure_of("groq", fake.url, read_timeout=0.3)
    assert failure.category == Category.TIMEOUT and failure.scope == Scope.MODEL
    assert time.perf_counter() - started < 3
    assert fake.count(MODEL) == 1


def test_refused_connection_condemns_the_provider():
    failure, _ = failure_of("cerebras", refused_url())
    assert failure.category == Category.CONNECTION_ERROR and failure.scope == Scope.PROVIDER


def test_dropped_connection_is_a_connection_error(fake):
    fake.script(MODEL, Reply(drop=True))
    failure, _ = failure_of("groq", fake.url)
    assert failure.category == Category.CONNECTION_ERROR


def test_connect_timeout_is_a_connection_problem_not_a_slow_model():
    request = httpx.Request("POST", "http://example.invalid/")
    import groq

    try:
        try:
            raise httpx.ConnectTimeout("connect timed out", request=request)
        except httpx.ConnectTimeout as cause:
            raise groq.APITimeoutError(request=request) from cause
    except groq.APITimeoutError as exc:
        failure = classify(exc, "groq")
    assert failure.category == Category.CONNECTION_ERROR and failure.reason == "connect_timeout"


def test_the_word_model_alone_does_not_mean_model_unavailable():
    response = httpx.Response(500, json={"error": {"message": "model inference failed; the model crashed"}},
                              request=httpx.Request("POST", "http://x/"))
    import groq

    exc = groq.InternalServerError("Error code: 500", response=response, body=response.json())
    assert classify(exc, "groq").category == Category.SERVER_ERROR
    assert classify(UnusableResponse("odd", body={"error": {"message": "please choose a model"}})).category \
        == Category.SERVER_ERROR
    assert classify(UnusableResponse("odd", body={"error": {"message": "model foo does not exist"}})).category \
        == Category.MODEL_UNAVAILABLE


def test_invalid_output_and_internal_errors():
    failure = classify(InvalidOutput("no JSON object", raw_output="prose"))
    assert failure.category == Category.INVALID_OUTPUT and failure.raw_output == "prose"
    failure = classify(KeyError("boom"))
    assert failure.category == Category.UNKNOWN and failure.reason == "internal"


def test_messages_never_carry_secrets(fake):
    fake.script(MODEL, groq_error(401, f"Invalid API Key {GROQ_KEY} for org_01kjh7p9n8f1qs6n; Bearer abc.def.ghi"))
    failure, _ = failure_of("groq", fake.url)
    assert GROQ_KEY not in failure.message and "org_01kjh7p9n8f1qs6n" not in failure.message
    assert "abc.def.ghi" not in failure.message
    assert redact("key=sk-abcdefghijkl123 and hf_fake-token-abcdefghijklmnopqrstuvwxyz") == \
        "key=[redacted-key] and [redacted-key]"
