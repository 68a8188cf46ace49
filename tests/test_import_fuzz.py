"""Property-based imports: lines whose fields hold the wrong type, shape or size, for every field of
the stored sample (metadata and extra fields included), are refused with a 4xx naming the line and
the field, and nothing is stored; never a 5xx. The same lines in a background job fail the job
before anything is stored, the error naming the line and the field."""
from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage.records import FIELDS, MAX_COUNT, MAX_EXTRA_DEPTH, MAX_ID, MAX_TEXT, MAX_TOPIC
from tests.conftest import wait_for

REQUIRED = ("id", "question", "answer", "topic", "difficulty", "case_citation", "reasoning")

# Values no field of that kind accepts.
containers = st.one_of(st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(),
                                                                             max_size=3))
numbers = st.one_of(st.integers(min_value=-10**6, max_value=10**6), st.floats(allow_nan=False, allow_infinity=False))
not_text = st.one_of(numbers, st.booleans(), containers)
surrogate = st.sampled_from(["\ud800", "x\udfffy", "What is \udbff a trust?"])
non_finite = st.sampled_from([math.nan, math.inf, -math.inf])


def text_over(limit: int) -> st.SearchStrategy[str]:
    return st.integers(min_value=limit + 1, max_value=limit + 50).map(lambda n: "x" * n)


def not_a_count() -> st.SearchStrategy[Any]:
    return st.one_of(st.text(max_size=8), st.booleans(), containers, non_finite,
                     st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not f.is_integer()),
                     st.integers(max_value=-1), st.integers(min_value=MAX_COUNT + 1))


def not_a_number(high: float) -> st.SearchStrategy[Any]:
    return st.one_of(st.text(max_size=8), st.booleans(), containers, non_finite,
                     st.floats(max_value=-1e-9, allow_nan=False, allow_infinity=False),
                     st.floats(min_value=high * 2 + 1, allow_nan=False, allow_infinity=False))


def not_a_timestamp() -> st.SearchStrategy[Any]:
    return st.one_of(not_text, st.sampled_from(["yesterday", "2024-13-01T00:00:00", "01/02/2024", "2024-02-30",
                                                "20240101T000000", " ", "2024-01-01T25:00:00Z"]))


# field -> values it must refuse
WRONG: dict[str, st.SearchStrategy[Any]] = {
    "id": st.one_of(not_text, st.none(), st.sampled_from(["", "   "]), text_over(MAX_ID), surrogate),
    "question": st.one_of(not_text, st.none(), st.sampled_from(["", " \t "]), text_over(MAX_TEXT), surrogate),
    "answer": st.one_of(not_text, st.none(), st.just(""), text_over(MAX_TEXT), surrogate),
    "reasoning": st.one_of(not_text, st.none(), st.just("  "), text_over(MAX_TEXT), surrogate),
    "case_citation": st.one_of(not_text, st.none(), text_over(MAX_TEXT), surrogate),
    "topic": st.one_of(not_text, st.none(), st.just(""), text_over(MAX_TOPIC), surrogate),
    "difficulty": st.one_of(not_text, st.none(), st.sampled_from(["", "hard", "Basic", "legendary"])),
    "sample_type": st.one_of(not_text, st.sampled_from(["poem", "balance", "Educational"])),
    "provider": st.one_of(not_text, surrogate),
    "model": st.one_of(not_text, surrogate),
    "batch_id": st.one_of(not_text, surrogate),
    "duplicate_of": st.one_of(not_text, st.just("")),
    "created_at": not_a_timestamp(),
    "updated_at": not_a_timestamp(),
    "prompt_tokens": not_a_count(),
    "completion_tokens": not_a_count(),
    "attempts": not_a_count(),
    "latency": not_a_number(1e7),
    "quality_score": not_a_number(1.0),
    "simulated": st.one_of(st.text(max_size=5), numbers, containers),
    "quality_flags": st.one_of(st.text(max_size=5), numbers, st.booleans(),
                               st.lists(st.one_of(numbers, st.none(), st.booleans()), min_size=1, max_size=3),
                               st.dictionaries(st.text(max_size=3), st.text(max_size=3), min_size=1, max_size=2)),
    "notes": st.one_of(non_finite, st.integers(min_value=2**63), surrogate,
                       st.integers(min_value=MAX_EXTRA_DEPTH + 1, max_value=MAX_EXTRA_DEPTH + 20).map(
                           lambda depth: json.loads("[" * depth + "]" * depth)),
                       st.lists(non_finite, min_size=1, max_size=2).map(lambda xs: {"scores": xs})),
}


def good(n: int) -> dict[str, Any]:
    return {"id": f"fz_{n}", "question": f"Fuzz question {n}: can a landlord in Leeds keep deposit number {n}?",
            "answer": "Only for proven loss.", "topic": "Property Law - Leasehold vs Freehold", "difficulty": "basic",
            "case_citation": "Street v Mountford [1985] AC 809", "reasoning": "Step 1: the scheme. Step 2: the loss.",
            "provider": "groq", "model": "m", "prompt_tokens": 10, "completion_tokens": 20, "latency": 0.5,
            "attempts": 1, "simulated": False, "created_at": "2024-05-01T12:00:00+00:00", "notes": {"page": n}}


@st.composite
def import_with_one_bad_field(draw) -> tuple[str, int, str]:
    """(content, the bad line's number, the bad field)."""
    count = draw(st.integers(min_value=1, max_value=4))
    bad = draw(st.integers(min_value=0, max_value=count - 1))
    field = draw(st.sampled_from(sorted(WRONG)))
    value = draw(WRONG[field])
    lines = []
    for n in range(count):
        record = good(n)
        if n == bad:
            record[field] = value
        lines.append(json.dumps(record, ensure_ascii=draw(st.booleans())))
    return "\n".join(lines), bad + 1, field


@st.composite
def import_with_a_missing_field(draw) -> tuple[str, int, str]:
    count = draw(st.integers(min_value=1, max_value=3))
    bad = draw(st.integers(min_value=0, max_value=count - 1))
    field = draw(st.sampled_from(REQUIRED))
    lines = []
    for n in range(count):
        record = good(n)
        if n == bad:
            del record[field]
        lines.append(json.dumps(record))
    return "\n".join(lines), bad + 1, field


def size(client) -> int:
    return int(client.get("/api/data").headers["X-Total-Count"])


def assert_refused(client, content: str, line: int, field: str) -> None:
    response = client.post("/api/import/jsonl", json={"content": content})
    assert 400 <= response.status_code < 500, (response.status_code, response.get_data(as_text=True)[:300])
    error = response.get_json()["error"]
    assert f"line {line}:" in error and field in error, error[:300]
    assert size(client) == 0


FUZZ = settings(max_examples=150, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@FUZZ
@given(case=import_with_one_bad_field())
def test_a_mistyped_field_is_a_4xx_naming_line_and_field(client, case):
    assert_refused(client, *case)


@settings(max_examples=40, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=import_with_a_missing_field())
def test_a_missing_field_is_a_4xx_naming_line_and_field(client, case):
    assert_refused(client, *case)


def test_every_field_is_covered():
    """Each field of the stored sample (and an extra one) has wrong values above."""
    assert set(FIELDS) | {"notes"} == set(WRONG)


@pytest.mark.parametrize("field", ["question", "provider", "notes"])
def test_a_raw_lone_surrogate_in_the_content_names_its_line_and_field(client, field):
    """The content itself holds the surrogate (not an escape inside the line): still the line's error."""
    lines = [json.dumps(good(0)), json.dumps({**good(1), field: "bad \ud800 text"}, ensure_ascii=False)]
    assert "\ud800" in lines[1]
    assert_refused(client, "\n".join(lines), 2, field)


@settings(max_examples=25, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=import_with_one_bad_field())
def test_in_a_background_job_the_bad_line_fails_the_job_before_anything_is_stored(client, case):
    content, line, field = case
    response = client.post("/api/import/jsonl?background=true", json={"content": content})
    assert response.status_code == 202, response.get_data(as_text=True)[:300]
    location = response.headers["Location"]
    job = wait_for(lambda: (j := client.get(location).get_json()["job"])["status"] not in ("queued", "running") and j)
    assert job["status"] == "failed" and job["imported"] == 0
    [error] = job["errors"]
    assert error["line"] == line and f"line {line}:" in error["error"] and field in error["error"]
    assert size(client) == 0
