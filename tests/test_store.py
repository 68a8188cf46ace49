"""The store (on the test backend): atomic writes, no lost updates; the SQLite file: durability across a
process crash, connections closed with their threads, a failing commit rolled back."""
from __future__ import annotations

import os
import sqlite3
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

from storage.store import DuplicateId, Store


def record(sample_id: str, **fields) -> dict:
    return {"id": sample_id, "question": f"Question {sample_id}?", "answer": "Answer.", "reasoning": "Step 1: x",
            "case_citation": "Donoghue v Stevenson [1932] AC 562", "topic": "Tort Law - Nuisance",
            "difficulty": "basic", **fields}


@pytest.mark.sqlite_only
def test_a_write_survives_a_crash_of_the_process(tmp_path):
    db = tmp_path / "crash.sqlite3"
    script = textwrap.dedent(f"""
        import os, sys
        from storage.store import Store
        store = Store({str(db)!r})
        store.add({{"id": "survivor", "question": "q", "answer": "a", "reasoning": "r", "case_citation": "c",
                    "topic": "Tort Law - Nuisance", "difficulty": "basic"}})
        print("written", flush=True)
        os.kill(os.getpid(), {int(signal.SIGKILL)})
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == -signal.SIGKILL and "written" in result.stdout
    reopened = Store(db)
    assert reopened.get("survivor")["question"] == "q"
    reopened.close()


def test_concurrent_writers_lose_nothing(make_store):
    store = make_store("c.sqlite3")
    store.add(record("shared"))

    def writer(n: int) -> None:
        for i in range(25):
            store.add(record(f"w{n}_{i}"))
            store.update("shared", {f"field_{n}": i})  # read-merge-write under one transaction

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.count() == 1 + 6 * 25
    shared = store.get("shared")
    assert all(shared[f"field_{n}"] == 24 for n in range(6))  # every thread's last update is there
    store.close()


def test_batch_insert_is_all_or_nothing(make_store):
    store = make_store("a.sqlite3")
    store.add(record("exists"))
    with pytest.raises(DuplicateId):
        store.add_many([record("new1"), record("exists")])
    assert store.count() == 1 and store.get("new1") is None
    store.close()


def test_updates_merge_and_keep_metadata(make_store):
    store = make_store("m.sqlite3")
    first = store.add(record("s", provider="groq", model="m", prompt_tokens=10, extra_field="kept"))
    updated = store.update("s", {"answer": "New."})
    assert updated["answer"] == "New." and updated["provider"] == "groq" and updated["prompt_tokens"] == 10
    assert updated["extra_field"] == "kept" and updated["created_at"] == first["created_at"]
    assert updated["updated_at"] >= first["updated_at"]
    assert store.update("missing", {"answer": "x"}) is None
    store.close()


def test_search_is_plain_text(make_store):
    store = make_store("s.sqlite3")
    store.add(record("a", question="Is 100% of the [deposit] recoverable_now?"))
    store.add(record("b", question="Is 100 of the deposit recoverable?"))
    assert [r["id"] for r in store.search("100% of the [deposit]", "question", 10)] == ["a"]
    assert [r["id"] for r in store.search("_now", None, 10)] == ["a"]
    assert store.search(".*", None, 10) == []
    store.close()


def test_statistics_frame_stays_exact_while_loading_under_writes(make_store):
    from dataset.stats import StatsFrame

    store = make_store("f.sqlite3")
    store.add_many([record(f"old{i}") for i in range(3000)])
    for attempt in range(3):
        frame = StatsFrame(store)
        writer = threading.Thread(target=lambda a=attempt: [store.add(record(f"new{a}_{i}")) for i in range(150)])
        loader = threading.Thread(target=frame.frame)
        writer.start()
        loader.start()
        writer.join()
        loader.join()
        store.update("old1", {"difficulty": "expert"})
        store.delete("old2")
        built = frame.frame()
        assert built.height == store.count()
        assert built["id"].n_unique() == built.height
        assert built.filter(built["id"] == "old1")["difficulty"].to_list() == ["expert"]
        store.add(record(f"old2_{attempt}"))  # keep the next round comparable
    store.close()


def test_column_reads_and_questions_in_insertion_order(make_store):
    store = make_store("r.sqlite3")
    store.add(record("a", batch_id="b1", quality_flags=["short_answer"], simulated=True))
    store.add(record("b", question="Why?", batch_id="b2"))
    store.add(record("c", batch_id="b1"))
    assert list(store.iter_questions()) == [("a", "Question a?"), ("b", "Why?"), ("c", "Question c?")]
    read = store.columns(("id", "quality_flags", "simulated"), lengths={"q_len": "question"})
    assert read == {"id": ["a", "b", "c"], "quality_flags": [["short_answer"], [], []],
                    "simulated": [True, False, False], "q_len": [11, 4, 11]}
    assert store.columns(("id", "difficulty"), filters={"batch_id": "b1"}) == {"id": ["a", "c"],
                                                                             "difficulty": ["basic", "basic"]}
    assert store.columns(("id",), filters={"batch_id": "none"}) == {"id": []}
    for bad in ({"fields": ("id; DROP TABLE samples",)}, {"fields": ("extra",)},
                {"fields": ("id",), "lengths": {"id": "question"}}):
        with pytest.raises(ValueError):
            store.columns(bad["fields"], lengths=bad.get("lengths"))
    assert store.count() == 3
    store.close()


# -- connections, commits and listeners ------------------------------------------------------

def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.sqlite_only
def test_a_finished_threads_connection_is_closed(tmp_path):
    store = Store(tmp_path / "fd.sqlite3")
    store.add(record("a"))
    before = open_descriptors()
    for n in range(30):   # each thread opens its own connection (the file and its -wal: 2 descriptors)
        thread = threading.Thread(target=store.add, args=(record(f"t{n}"),))
        thread.start()
        thread.join()
    assert store.count() == 31
    # Not +60: a thread's connection closes when the thread ends. (SQLite may keep one closed
    # descriptor of the file for reuse while other connections hold locks on it.)
    assert open_descriptors() - before <= 2
    store.close()


@pytest.mark.sqlite_only
def test_a_failing_commit_rolls_back_so_the_connection_works_again(tmp_path):
    store = Store(tmp_path / "commit.sqlite3")
    db = store.database.connection()
    # A deferred foreign key is checked at COMMIT: a dangling reference makes COMMIT itself fail.
    db.execute("CREATE TEMP TABLE parent (id INTEGER PRIMARY KEY)")
    db.execute("CREATE TEMP TABLE child (parent_id INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)")
    with pytest.raises(sqlite3.IntegrityError):
        with store.database.transaction() as tx:
            tx.execute("INSERT INTO temp.child VALUES (42)")
    assert not db.in_transaction
    store.add(record("after"))            # the same thread's connection takes the next write
    assert store.get("after")["question"] == "Question after?"
    store.close()
    reopened = Store(tmp_path / "commit.sqlite3")
    assert reopened.count() == 1
    reopened.close()


def test_a_listener_that_raises_does_not_undo_a_committed_write(make_store, caplog):
    store = make_store("listen.sqlite3")
    heard: list[str] = []

    def broken(change) -> None:
        raise RuntimeError("listener bug")

    store.on_change(broken)
    store.on_change(lambda change: heard.extend(r["id"] for r in change.records))
    stored = store.add(record("kept"))
    assert stored["id"] == "kept" and store.get("kept") is not None
    assert heard == ["kept"]              # later listeners still hear about the change
    assert store.version == 1
    assert any("listener bug" in r.getMessage() or (r.exc_info and "listener bug" in str(r.exc_info[1]))
               for r in caplog.records)
    store.close()


def test_lookups_holding_nul_match_nothing_and_never_fail(make_store):
    """PostgreSQL refuses U+0000 even as a parameter; no stored text holds it (writes refuse it), so
    on either backend such a lookup simply finds nothing."""
    store = make_store("nul.sqlite3")
    store.add(record("a"))
    assert store.get("a\x00") is None and store.delete("a\x00") is False and store.update("a\x00", {}) is None
    assert store.count({"topic": "Tort\x00"}) == 0 and store.list({"ids": ["a\x00", "a"]})[0]["id"] == "a"
    assert store.search("Question\x00", None, 10) == [] and store.exists(["a", "a\x00"]) == {"a"}
    assert store.count({"exclude_flags": ["x\x00"]}) == 1
