"""Quality through the API: flags on every sample, duplicates, rejections in batches, the quality
report, filters, export, and publishing to a local Hugging Face Hub stand-in."""
from __future__ import annotations

import io
import json
import logging
import random

import polars as pl
import pytest

from config.catalog import find_topic
from generation.prompts import SampleSpec, build_messages
from simulator.content import make_sample
from simulator.server import Reply, refused_url
from tests.conftest import wait_for
from tests.hub_standin import VALID_TOKEN

GENERATE = {"practice_area": "Tort Law", "topic": "Nuisance", "difficulty": "basic"}
FAST_BATCH = {"batch": {"max_in_flight": 3, "max_wait_seconds": 1, "topic_skip_after": 50}}


def good(topic: str = "Tort Law - Nuisance", difficulty: str = "basic", kind: str = "case_analysis", seed: int = 1):
    spec = SampleSpec(find_topic(topic), difficulty, kind)
    return make_sample(build_messages(spec)[1]["content"], random.Random(seed))


def line(sample_id: str, sample: dict, topic: str = "Tort Law - Nuisance", difficulty: str = "basic") -> str:
    return json.dumps({"id": sample_id, **sample, "topic": topic, "difficulty": difficulty,
                       "sample_type": "case_analysis"})


def us_law(sample: dict) -> dict:
    return {**sample, "case_citation": sample["case_citation"] + "; Roe v. Wade, 410 U.S. 113 (1973)"}


def test_generated_samples_carry_flags_and_a_score(client):
    sample = client.post("/api/generate", json=GENERATE).get_json()["sample"]
    assert 0 <= sample["quality_score"] <= 1 and isinstance(sample["quality_flags"], list)
    assert sample["quality"]["authorities"]["valid"] >= 1
    stored = client.get(f"/api/sample/{sample['id']}").get_json()["sample"]
    assert stored["quality_score"] == sample["quality_score"] and stored["quality_flags"] == sample["quality_flags"]


def test_a_rejected_generation_is_not_stored(client, fake):
    prompt_sample = good(difficulty="basic")
    for model in ("g-large", "g-small", "c-large", "c-small"):
        fake.always(model, Reply(content=json.dumps(us_law(prompt_sample))))
    body = client.post("/api/generate", json=GENERATE).get_json()
    assert body["success"] and body["saved"] is False and "us_law" in body["rejected"]["codes"]
    assert "us_law" in body["sample"]["quality_flags"]
    assert client.get("/api/data").get_json() == []
    assert len(fake.requests) == 3  # generated again, twice, before giving the answer


def test_exact_duplicates_are_rejected_everywhere(client):
    sample = good()
    first = client.post("/api/import/jsonl", json={"content": line("a", sample)}).get_json()
    assert first["imported"] == 1
    shouted = {**sample, "question": "  " + sample["question"].upper().replace(",", "") + " "}
    again = client.post("/api/import/jsonl", json={"content": line("b", shouted)}).get_json()
    assert again["imported"] == 0 and again["duplicate_questions"] == [{"id": "b", "duplicate_of": "a"}]
    added = client.post("/api/add", json={**sample, "topic": "Tort Law - Nuisance", "difficulty": "basic"})
    assert added.status_code == 409 and "'a'" in added.get_json()["error"]
    other = good(seed=2)
    client.post("/api/import/jsonl", json={"content": line("c", other)})
    put = client.put("/api/sample/c", json={"question": sample["question"]})
    assert put.status_code == 409
    assert client.get("/api/sample/c").get_json()["sample"]["question"] == other["question"]
    assert client.put("/api/sample/a", json={"answer": sample["answer"] + " More."}).status_code == 200  # itself


def test_near_duplicates_are_flagged_with_the_id_they_resemble(client):
    base = good(seed=3)
    question = "Can a landlord keep a tenant's deposit without giving any reason under English law?"
    paraphrase = "Under English law, can a landlord keep the deposit of a tenant without giving any reason?"
    client.post("/api/import/jsonl", json={"content": line("orig", {**base, "question": question})})
    client.post("/api/import/jsonl", json={"content": line("para", {**good(seed=4), "question": paraphrase})})
    para = client.get("/api/sample/para").get_json()["sample"]
    assert "near_duplicate" in para["quality_flags"] and para["duplicate_of"] == "orig"
    distinct = "When does an occupier owe a duty to a trespasser under the Occupiers' Liability Act 1984?"
    client.post("/api/import/jsonl", json={"content": line("other", {**good(seed=5), "question": distinct})})
    assert "near_duplicate" not in client.get("/api/sample/other").get_json()["sample"]["quality_flags"]
    clusters = client.get("/api/stats/quality").get_json()["stats"]["duplicate_clusters"]
    assert clusters == [{"size": 2, "ids": ["orig", "para"]}]


def test_filters_on_flags_for_data_and_export(client):
    client.post("/api/import/jsonl", json={"content": "\n".join([
        line("clean", good(seed=6)), line("usa", us_law(good(seed=7)))])})
    assert [r["id"] for r in client.get("/api/data?flag=us_law").get_json()] == ["usa"]
    assert [r["id"] for r in client.get("/api/data?clean=true").get_json()] == ["clean"]
    assert [r["id"] for r in client.get("/api/data?without_flag=us_law").get_json()] == ["clean"]
    assert client.get("/api/data?flag=nonsense").status_code == 400
    exported = pl.read_parquet(io.BytesIO(client.get("/api/export?format=parquet&clean=true").data))
    assert exported["id"].to_list() == ["clean"] and exported["quality_flags"].dtype == pl.List(pl.Utf8)
    jsonl = client.get("/api/export?format=jsonl&flag=us_law").data.decode().splitlines()
    assert [json.loads(x)["id"] for x in jsonl] == ["usa"]


def test_a_batch_retries_rejected_samples_and_reaches_its_target_with_clean_rows(make_app, fake):
    # One model only, so every scripted answer below is consumed, in order, by this batch.
    client = make_app({**FAST_BATCH, "providers": {"groq": {"models": [{"id": "g-large"}]}}},
                      env_overrides={"CEREBRAS_API_KEY": ""}).test_client()
    bad = us_law(good())
    repeated = good(seed=8)
    fake.script("g-large", *[Reply(content=json.dumps(bad))] * 3, Reply(content=json.dumps(repeated)),
                Reply(content=json.dumps(repeated)))
    batch_id = client.post("/api/generate/batch/start",
                           json={"target_count": 8, "topic": "Tort Law - Nuisance", "difficulty": "basic"}
                           ).get_json()["batch_id"]
    state = wait_for(lambda: (s := client.get(f"/api/generate/batch/status?batch_id={batch_id}").get_json())
                     and not s["running"] and s)
    assert state["status"] == "completed" and state["samples_generated"] == 8 and state["rejected_total"] == 4
    rows = client.get(f"/api/batch/{batch_id}/samples").get_json()["samples"]
    assert len(rows) == 8 and len({r["question"].casefold() for r in rows}) == 8
    assert client.get("/api/data?flag=us_law").get_json() == []
    attempts = client.get(f"/api/batch/{batch_id}/attempts").get_json()["attempts"]
    rejected = [a for a in attempts if a["outcome"] == "rejected"]
    assert len(rejected) == 4 and all(a["category"] == "invalid_output" for a in rejected)
    reasons = client.get("/api/stats/quality").get_json()["stats"]["rejection_reasons"]
    assert reasons["batch_attempts"] == {"us_law": 3, "exact_duplicate": 1}


def test_quality_report_shape_and_coverage_gaps(client):
    client.post("/api/import/jsonl", json={"content": "\n".join([
        line("x1", good(seed=9)), line("x2", good("Tax Law - VAT", "expert", seed=10), "Tax Law - VAT", "expert")])})
    stats = client.get("/api/stats/quality").get_json()["stats"]
    assert stats["total_samples"] == 2 and stats["scored_samples"] == 2 and 0 < stats["mean_score"] <= 1
    assert set(stats["flags"]) >= {"exact_duplicate", "near_duplicate", "us_law", "refusal", "impossible_citation"}
    assert all({"count", "severity", "meaning"} <= set(v) for v in stats["flags"].values())
    coverage = stats["coverage"]
    assert coverage["cells"] == 11 * 5 * 4 and coverage["empty_cells"] == 218
    assert coverage["matrix"]["Tort Law"]["basic"]["case_analysis"] == 1
    assert {"practice_area": "Tax Law", "difficulty": "expert", "sample_type": "case_analysis"} not in coverage["gaps"]
    assert {"practice_area": "Family Law", "difficulty": "basic", "sample_type": "educational"} in coverage["gaps"]


def test_publish_to_the_hub_stand_in(client, hub):
    client.post("/api/import/jsonl", json={"content": "\n".join([
        line("p1", good(seed=11)), line("p2", good("Tax Law - VAT", "expert", seed=12), "Tax Law - VAT", "expert")])})
    client.post("/api/generate", json=GENERATE)
    before = client.get("/api/data").get_json()
    response = client.post("/api/huggingface/push", json={"token": VALID_TOKEN, "repo_name": "uk-law-test",
                                                          "private": True})
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["success"] and body["repo_url"] == f"{hub.url}/datasets/tester/uk-law-test"
    assert hub.repos["tester/uk-law-test"] == {"private": True, "type": "dataset"}
    files = hub.files["tester/uk-law-test"]
    published = pl.read_parquet(io.BytesIO(files["data/train.parquet"]))
    assert sorted(published["id"].to_list()) == sorted(r["id"] for r in before)
    card = files["README.md"].decode()
    assert card.startswith("---\n") and "- synthetic" in card and "data_files: data/train.parquet" in card
    assert "| Tort Law | 2 |" in card and "| Tax Law | 1 |" in card and "| expert | 1 |" in card
    assert "| groq | g-large | 1 |" in card and "us_law (reject)" in card
    assert client.get("/api/data").get_json() == before  # the local dataset is untouched

    again = client.post("/api/huggingface/push", json={"token": VALID_TOKEN, "repo_name": "tester/uk-law-test",
                                                       "format": "csv"})
    assert again.status_code == 200 and "data/train.csv" in hub.files["tester/uk-law-test"]


@pytest.mark.parametrize("body, status, words", [
    ({"token": "hf_wrong"}, 400, "rejected the token"),
    ({}, 400, "no Hugging Face token"),
    ({"token": VALID_TOKEN, "format": "xlsx"}, 400, "format"),
    ({"token": VALID_TOKEN, "repo_name": "  "}, 400, "repo_name"),
    ({"token": VALID_TOKEN, "repo_name": "bad name!!"}, 400, "cannot publish: Repo id must use alphanumeric"),
    ({"token": "hf_\u00e9t\u00e9"}, 400, "token"),                # not ASCII: cannot go in an HTTP header
    ({"token": "hf_two words"}, 400, "token"),
])
def test_publish_errors(client, body, status, words):
    client.post("/api/import/jsonl", json={"content": line("e1", good(seed=13))})
    response = client.post("/api/huggingface/push", json=body)
    assert response.status_code == status and words in response.get_json()["error"]


def test_publishing_an_empty_dataset_is_refused(client):
    response = client.post("/api/huggingface/push", json={"token": VALID_TOKEN})
    assert response.status_code == 400 and "empty" in response.get_json()["error"]


def _table(card: str, header: str) -> dict[str, int]:
    """A two-column count table of the dataset card, by its header line."""
    lines = card.split(header, 1)[1].split("\n\n", 1)[0].strip().splitlines()[1:]
    return {cells[0]: int(cells[1]) for cells in (line.strip("| ").split(" | ") for line in lines)}


def test_the_card_describes_exactly_the_rows_pushed(client, hub):
    client.post("/api/import/jsonl", json={"content": "\n".join([
        line("c1", good(seed=21)), line("c2", good("Tax Law - VAT", "expert", seed=22), "Tax Law - VAT", "expert"),
        line("usa", us_law(good(seed=23)))])})
    response = client.post("/api/huggingface/push?clean=true", json={"token": VALID_TOKEN, "repo_name": "clean"})
    assert response.status_code == 200, response.get_json()
    files = hub.files["tester/clean"]
    published = pl.read_parquet(io.BytesIO(files["data/train.parquet"]))
    assert sorted(published["id"].to_list()) == ["c1", "c2"]      # the us_law sample stayed home
    card = files["README.md"].decode()
    assert "A **synthetic** dataset of 2 questions" in card and "size_categories:\n- n<1K" in card
    assert _table(card, "| practice area | samples |") == {"Tort Law": 1, "Tax Law": 1}
    assert _table(card, "| difficulty | samples |") == {"basic": 1, "expert": 1}
    assert _table(card, "| sample type | samples |") == {"case_analysis": 2}


@pytest.mark.parametrize("target, bug", [
    ("dataset.publishing.dataset_card", RuntimeError("card template bug")),
    ("dataset.publishing.export_bytes", KeyError("no such column")),
    ("huggingface_hub.HfApi.create_commit", TypeError("create_commit() got an unexpected keyword argument")),
])
def test_a_local_bug_while_publishing_is_not_reported_as_the_hub(client, hub, monkeypatch, caplog, target, bug):
    """Our own bug surfaces as an internal error with its traceback in the log, never as "cannot
    reach the Hugging Face Hub" (or as a 400 blaming the request)."""
    client.post("/api/import/jsonl", json={"content": line("b1", good(seed=24))})

    def broken(*args, **kwargs):
        raise bug

    monkeypatch.setattr(target, broken)
    response = client.post("/api/huggingface/push", json={"token": VALID_TOKEN, "repo_name": "bugs"})
    assert response.status_code == 500, response.get_json()
    assert response.get_json()["error"] == "internal error; see the server log"
    [logged] = [r for r in caplog.records if r.getMessage() == f"unhandled error: {type(bug).__name__}"]
    text = logging.Formatter().format(logged)
    assert "Traceback (most recent call last)" in text and "in broken" in text and str(bug) in text
    assert not hub.files.get("tester/bugs")   # nothing was committed


def test_an_unreachable_hub_is_reported_as_such(make_app):
    client = make_app(env_overrides={"HF_ENDPOINT": refused_url()}).test_client()
    client.post("/api/import/jsonl", json={"content": line("n1", good(seed=25))})
    response = client.post("/api/huggingface/push", json={"token": VALID_TOKEN, "repo_name": "net"})
    assert response.status_code == 502
    assert response.get_json()["error"] == "cannot reach the Hugging Face Hub (ConnectError)"
