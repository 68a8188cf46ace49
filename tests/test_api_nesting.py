"""JSON nested absurdly deep is a 400 naming the problem on every endpoint, never a 500 (RecursionError),
and it is refused before the parser recurses: nothing changes."""
from __future__ import annotations

import json

import pytest

from web.validation import MAX_JSON_DEPTH

DEEP = 100_000
SAMPLE = {"id": "n1", "question": "What is the duty of care in English negligence law?",
          "answer": "A duty to take reasonable care.", "topic": "Tort Law - Professional Negligence",
          "difficulty": "basic", "case_citation": "Donoghue v Stevenson [1932] AC 562",
          "reasoning": "Step 1: neighbour principle."}
ENDPOINTS = [("post", "/api/generate"), ("post", "/api/generate/batch/start"), ("post", "/api/generate/batch/stop"),
             ("post", "/api/import/jsonl"), ("post", "/api/add"), ("post", "/api/samples/download"),
             ("post", "/api/huggingface/push"), ("put", "/api/sample/n1")]
BODIES = [
    pytest.param("[" * DEEP, id="open-brackets"),
    pytest.param("[" * DEEP + "]" * DEEP, id="closed-array"),
    pytest.param('{"a": ' + '{"a": ' * DEEP + "1" + "}" * DEEP + "}", id="objects"),
    pytest.param(json.dumps({**SAMPLE, "target_count": 5, "topic": "x"})[:-1] + ', "extra": ' + "[" * DEEP + "]" * DEEP
                 + "}", id="inside-a-valid-body"),
]


def dataset_size(client) -> int:
    return int(client.get("/api/data").headers["X-Total-Count"])


@pytest.fixture
def seeded(client):
    assert client.post("/api/add", json=SAMPLE).status_code == 200
    return client


@pytest.mark.parametrize("method, path", ENDPOINTS)
@pytest.mark.parametrize("body", BODIES)
def test_deep_nesting_is_a_400_everywhere(seeded, fake, method, path, body):
    response = getattr(seeded, method)(path, data=body, content_type="application/json")
    assert response.status_code == 400, response.get_data(as_text=True)[:300]
    error = response.get_json()
    assert error["success"] is False and f"nested more than {MAX_JSON_DEPTH} levels" in error["error"]
    assert dataset_size(seeded) == 1 and len(fake.requests) == 0
    assert seeded.get("/api/generate/batch/history").get_json()["count"] == 0
    assert seeded.get("/api/sample/n1").get_json()["sample"]["answer"] == SAMPLE["answer"]


def test_nesting_up_to_the_limit_is_accepted_and_one_more_is_not(client):
    def body(depth: int, sample_id: str) -> str:
        # the object itself is one level; "extra" (ignored) adds the rest
        inner = "[" * (depth - 1) + "]" * (depth - 1)
        return json.dumps({**SAMPLE, "id": sample_id, "question": f"{SAMPLE['question']} ({sample_id})"})[:-1] \
            + f', "extra": {inner}}}'

    assert client.post("/api/add", data=body(MAX_JSON_DEPTH, "at-limit"), content_type="application/json").status_code == 200
    over = client.post("/api/add", data=body(MAX_JSON_DEPTH + 1, "over"), content_type="application/json")
    assert over.status_code == 400 and "nested" in over.get_json()["error"]
    assert dataset_size(client) == 1


def test_brackets_inside_strings_do_not_count(client):
    text = 'Step 1: he said "[[' + "[" * 5000 + '" and \\ {{' + "{" * 5000   # quotes and backslashes escaped
    response = client.post("/api/add", json={**SAMPLE, "reasoning": text})
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    assert client.get("/api/sample/n1").get_json()["sample"]["reasoning"] == text


def test_a_deep_line_in_an_import_is_a_400_naming_the_line(client):
    lines = [json.dumps(SAMPLE), "", "[" * DEEP, json.dumps({**SAMPLE, "id": "n2"})]
    response = client.post("/api/import/jsonl", json={"content": "\n".join(lines)})
    assert response.status_code == 400, response.get_data(as_text=True)[:300]
    assert "line 3" in response.get_json()["error"] and "nested" in response.get_json()["error"]
    nested_extra = json.dumps(SAMPLE)[:-1] + ', "extra": ' + "[" * DEEP + "]" * DEEP + "}"
    response = client.post("/api/import/jsonl", json={"content": nested_extra})
    assert response.status_code == 400 and "line 1" in response.get_json()["error"]
    assert dataset_size(client) == 0
