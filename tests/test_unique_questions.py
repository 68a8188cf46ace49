"""One question, stored once: the store's unique question key (the normalisation the duplicate
index uses) refuses an exact duplicate even when the in-memory index cannot know of it (another
server stored it), and the app answers as it does for a duplicate its index caught."""
from __future__ import annotations

import threading

import pytest

from storage.errors import DuplicateQuestion
from tests.test_quality_api import good, line
from tests.test_store import record


def test_the_store_refuses_an_exact_duplicate_question_itself(make_store):
    store = make_store("unique.sqlite3")
    store.add(record("a", question="What is a tenancy deposit?"))
    with pytest.raises(DuplicateQuestion) as caught:
        store.add(record("b", question="  what is a TENANCY deposit "))
    assert caught.value.conflicts == [("b", "a")]
    store.add(record("c", question="Is this another question?"))
    with pytest.raises(DuplicateQuestion) as caught:
        store.update("c", {"question": "What is a tenancy deposit!"})
    assert caught.value.conflicts == [("c", "a")]
    with pytest.raises(DuplicateQuestion) as caught:
        store.add_many([record("d", question="A fresh question?"), record("e", question="a FRESH question")])
    assert caught.value.conflicts == [("e", "d")]
    assert sorted(r["id"] for r in store.list()) == ["a", "c"]
    assert store.get("c")["question"] == "Is this another question?"
    store.update("a", {"question": "What is a tenancy deposit?!"})   # its own question, re-punctuated


def test_two_writers_storing_one_question_at_the_same_instant_store_it_once(make_store):
    """Two stores on one database (as two servers), racing the same normalised question round
    after round: exactly one gets in, the other is refused with DuplicateQuestion."""
    first, second = make_store("race.sqlite3"), make_store("race.sqlite3")
    outcomes: list[str] = []
    lock = threading.Lock()

    def add(store, sample_id: str, question: str, barrier: threading.Barrier) -> None:
        barrier.wait()
        try:
            store.add(record(sample_id, question=question))
            result = "stored"
        except DuplicateQuestion:
            result = "refused"
        with lock:
            outcomes.append(result)
    for n in range(15):
        barrier = threading.Barrier(2)
        threads = [threading.Thread(target=add, args=(first, f"a{n}", f"Is clause {n} fair?", barrier)),
                   threading.Thread(target=add, args=(second, f"b{n}", f"is CLAUSE {n} fair", barrier))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert outcomes.count("stored") == 15 and outcomes.count("refused") == 15
    assert first.count() == 15


def test_a_duplicate_only_the_database_knows_is_a_409_and_a_skipped_import_line(make_app, tmp_path):
    """Two apps on one database: the second's duplicate index was built before the first stored
    the question, so only the unique key can catch it; the answers are the index's."""
    data = tmp_path / "shared"
    first, second = make_app(data_dir=data), make_app(data_dir=data)
    for app in (first, second):
        assert app.extensions["services"].quality.wait_ready(30)
    sample = good()
    assert first.test_client().post("/api/import/jsonl", json={"content": line("a", sample)}).get_json()["imported"] == 1
    client = second.test_client()
    added = client.post("/api/add", json={**sample, "topic": "Tort Law - Nuisance", "difficulty": "basic"})
    assert added.status_code == 409 and added.get_json()["duplicate_of"] == "a"
    shouted = {**sample, "question": sample["question"].upper()}
    imported = client.post("/api/import/jsonl", json={"content": line("b", shouted)}).get_json()
    assert imported["imported"] == 0 and imported["duplicate_questions"] == [{"id": "b", "duplicate_of": "a"}]
    client.post("/api/import/jsonl", json={"content": line("c", good(seed=2))})
    put = client.put("/api/sample/c", json={"question": sample["question"]})
    assert put.status_code == 409 and put.get_json()["duplicate_of"] == "a"
    assert second.extensions["services"].store.count() == 2
