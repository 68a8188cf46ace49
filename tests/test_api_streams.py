"""The event stream takes one of a bounded number of slots: beyond SSE_MAX_STREAMS it is a 503 with
Retry-After in the error format, and a closed stream gives its slot back (the real server, with its
threads and disconnects, is in tests/test_process.py)."""
from __future__ import annotations

import json

import pytest

from config.settings import Settings, SettingsError

STREAM = "/api/generate/batch/stream"
DASHBOARD = {"Origin": "http://localhost:5173"}


def test_streams_beyond_the_limit_get_503_with_retry_after(make_app):
    client = make_app(sse_max_streams=2).test_client()
    first, second = client.get(STREAM), client.get(STREAM)
    assert first.status_code == second.status_code == 200
    refused = client.get(STREAM, headers=DASHBOARD)
    assert refused.status_code == 503 and int(refused.headers["Retry-After"]) > 0
    assert refused.get_json() == {"success": False,
                                  "error": "too many open event streams (at most 2); close one or retry later"}
    assert refused.headers["Access-Control-Allow-Origin"] == "http://localhost:5173"  # the dashboard can read it
    assert client.get("/api/health").status_code == 200

    first.close()                      # closed before it was ever read: the slot still comes back
    third = client.get(STREAM)
    assert third.status_code == 200
    chunk = next(iter(third.response))
    chunk = chunk.decode() if isinstance(chunk, bytes) else chunk
    assert json.loads(chunk[len("data: "):]) == {"type": "all_batches", "batches": {}}
    assert client.get(STREAM).status_code == 503
    second.close()
    third.close()
    assert client.get(STREAM).status_code == 200


def test_the_openapi_document_lists_503_for_the_stream(client):
    responses = client.get("/api/openapi.json").get_json()["paths"][STREAM]["get"]["responses"]
    assert "503" in responses


@pytest.mark.parametrize("env, limit", [
    ({}, 4),
    ({"SSE_MAX_STREAMS": "6"}, 6),
    ({"SSE_MAX_STREAMS": "50"}, 8),                       # never more than half of the 16 threads
    ({"SSE_MAX_STREAMS": "50", "SERVER_THREADS": "4"}, 2),
    ({"SERVER_THREADS": "2"}, 1),
])
def test_the_stream_limit_leaves_at_least_half_the_threads(env, limit):
    assert Settings.from_env(env).sse_stream_limit == limit


@pytest.mark.parametrize("value", ["0", "-1", "many"])
def test_a_bad_stream_limit_is_a_settings_error(value):
    with pytest.raises(SettingsError, match=r"^SSE_MAX_STREAMS: "):
        Settings.from_env({"SSE_MAX_STREAMS": value})
