"""The store's copies kept for fast reads: the narrow table of short columns and text lengths
(`samples_light`, behind `count`, `columns` and `column_arrays`) and the rows' JSON compressed in
blocks (`samples_json_blocks`, behind `iter_json` and `iter_json_zstd`). They must say exactly what
the samples table says, whatever wrote it."""
from __future__ import annotations

import json
import sqlite3

import polars as pl
import pytest

from storage import json_blocks
from storage.store import Store


def record(sample_id: str, **fields) -> dict:
    return {"id": sample_id, "question": f"Question {sample_id}?", "answer": "Answer.", "reasoning": "Step 1: x",
            "case_citation": "Donoghue v Stevenson [1932] AC 562", "topic": "Tort Law - Nuisance",
            "difficulty": "basic", **fields}


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(json_blocks, "BLOCK_ROWS", 2)


def decoded(store: Store, **kwargs) -> list[dict]:
    return json.loads(b"[" + b",".join(store.iter_json(**kwargs)) + b"]")


def block_count(path) -> int:
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT COUNT(*) FROM samples_json_blocks").fetchone()[0]
    finally:
        db.close()


def back_to_version_3(path) -> None:
    """Drop what versions after 3 added, as the release before them left its files."""
    db = sqlite3.connect(path)
    with db:
        for kind, name in db.execute("SELECT type, name FROM sqlite_master WHERE type IN ('trigger', 'table') AND "
                                     "(name LIKE 'samples_light%' OR name LIKE 'samples_json%') ORDER BY type = 'table'"
                                     ).fetchall():
            db.execute(f"DROP {kind.upper()} IF EXISTS {name}")
        db.execute("DELETE FROM schema_migrations WHERE version > 3")
    db.close()


@pytest.mark.sqlite_only
def test_json_reads_are_what_a_read_returns_after_adds_updates_and_deletes(tmp_path, small_blocks):
    store = Store(tmp_path / "j.sqlite3")
    assert decoded(store) == []
    store.add_many([record("a", provider="groq", latency=2, quality_flags=["short_answer"], reviewer="Ann"),
                    record("b", answer="Caf\u00e9 \u2013 \U0001F600", simulated=True), record("c")])
    assert block_count(store.path) == 1   # a and b; c waits for a partner
    store.update("a", {"answer": "Rewritten.", "difficulty": "expert"})
    store.delete("b")
    assert decoded(store) == json.loads(json.dumps(store.list()))
    assert decoded(store)[0]["answer"] == "Rewritten." and decoded(store)[0]["reviewer"] == "Ann"
    assert decoded(store, filters={"difficulty": "expert"}) == json.loads(json.dumps(store.list({"difficulty": "expert"})))
    assert [r["id"] for r in decoded(store, limit=1, offset=1)] == ["c"]
    assert [r["id"] for r in decoded(store, newest_first=True)] == ["c", "a"]
    store.close()


@pytest.mark.sqlite_only
def test_a_row_changed_outside_the_store_is_never_served_stale(tmp_path, small_blocks):
    path = tmp_path / "o.sqlite3"
    store = Store(path)
    store.add_many([record("a"), record("b"), record("c"), record("d")])
    assert block_count(path) == 2
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE samples SET answer = 'Edited by hand.', prompt_tokens = 'lots' WHERE id = 'a'")
    db.close()
    assert block_count(path) == 1   # the block holding it is gone
    rows = decoded(store)
    assert rows[0]["answer"] == "Edited by hand." and rows[0]["prompt_tokens"] is None   # repaired like any read
    assert rows == json.loads(json.dumps(store.list()))
    assert store.seal_json(force=True) == 2 and block_count(path) == 2 and decoded(store) == rows
    store.close()


@pytest.mark.sqlite_only
def test_rows_stored_before_the_copies_existed_get_them(tmp_path, small_blocks):
    path = tmp_path / "v3.sqlite3"
    store = Store(path)
    store.add_many([record("a", answer="x" * 50, quality_flags=["us_law"]), record("b", batch_id="b1"), record("c")])
    store.close()
    back_to_version_3(path)
    reopened = Store(path)
    assert reopened.count() == 3 and reopened.count({"batch_id": "b1"}) == 1
    assert reopened.columns(("id", "quality_flags"), lengths={"a_len": "answer"}) == {
        "id": ["a", "b", "c"], "quality_flags": [["us_law"], [], []], "a_len": [50, 7, 7]}
    assert decoded(reopened) == json.loads(json.dumps(reopened.list()))   # encoded on the way
    assert reopened.seal_json(force=True) == 2 and block_count(path) == 1
    assert decoded(reopened) == json.loads(json.dumps(reopened.list()))
    reopened.close()


@pytest.mark.sqlite_only
def test_the_narrow_copy_follows_every_write(tmp_path):
    path = tmp_path / "l.sqlite3"
    store = Store(path)
    store.add_many([record("a", batch_id="b1"), record("b", batch_id="b2"), record("c", batch_id="b1")])
    store.update("a", {"question": "Shorter?", "quality_flags": ["near_duplicate"]})
    store.delete("b")
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE samples SET topic = 'Contract Law - Formation', reasoning = 'abc' WHERE id = 'c'")
    db.close()
    lengths = {"q": "question", "a": "answer", "r": "reasoning", "c": "case_citation", "t": "topic"}
    fields = ("id", "topic", "batch_id", "quality_flags", "created_at", "simulated")
    from_light = store.columns(fields, lengths=lengths)
    records = store.list()
    assert from_light == {
        "id": ["a", "c"], "topic": ["Tort Law - Nuisance", "Contract Law - Formation"], "batch_id": ["b1", "b1"],
        "quality_flags": [["near_duplicate"], []], "created_at": [r["created_at"] for r in records],
        "simulated": [False, False], **{name: [len(r[field]) for r in records] for name, field in lengths.items()}}
    # a field the narrow copy lacks is read from the samples table, with the same answer for the rest
    assert store.columns((*fields, "question"), lengths=lengths) == {**from_light, "question": ["Shorter?", "Question c?"]}
    assert store.count({"flag": "near_duplicate"}) == 1 and store.count({"practice_area": "Contract Law"}) == 1
    store.close()


def test_the_statistics_frame_read_column_wise_equals_the_one_read_row_by_row(make_store):
    from dataset import stats

    store = make_store("f.sqlite3")
    store.add_many([record("a", provider="groq", model="m1", prompt_tokens=10, completion_tokens=20,
                           quality_score=0.75, quality_flags=["short_answer", "us_law"], simulated=True),
                    record("b", topic="Contract Law - Formation", sample_type="case_analysis", batch_id="b1"),
                    record("c", answer="\u00e9" * 30, duplicate_of="a", quality_flags=[])])
    store.update("b", {"difficulty": "expert"})
    fast = stats.StatsFrame(store).frame()
    arrays = store.column_arrays(stats.LOAD_FIELDS, lengths=stats.LOAD_LENGTHS)
    if store.dialect.name == "sqlite":   # PostgreSQL reads the columns by COPY (`column_csv`) instead
        assert arrays is not None and json.loads(arrays["quality_flags"]) == [["short_answer", "us_law"], [], []]
    else:
        assert arrays is None
    slow = stats.StatsFrame(store)
    slow.store = row_by_row(store)
    assert fast.to_dicts() == slow.frame().to_dicts() and fast.schema == slow.frame().schema
    assert fast.filter(fast["id"] == "c")["a_len"].to_list() == [30]
    empty = make_store("empty.sqlite3")
    assert stats.StatsFrame(empty).frame().height == 0
    if store.dialect.name != "sqlite":   # PostgreSQL's typed columns cannot hold a value of the wrong type
        return
    db = sqlite3.connect(store.path)   # a value of the wrong type: no arrays, the repairing read instead
    with db:
        db.execute("UPDATE samples SET prompt_tokens = 'lots' WHERE id = 'a'")
    db.close()
    assert store.column_arrays(stats.LOAD_FIELDS, lengths=stats.LOAD_LENGTHS) is None
    assert stats.StatsFrame(store).frame().filter(pl.col("id") == "a")["prompt_tokens"].to_list() == [None]
    store.close()
    empty.close()


def row_by_row(store: Store):
    """A stand-in for `store` with neither column-wise read: the statistics frame is built from
    `columns`, one Python value per cell (the reference the fast reads must equal)."""
    return type("RowByRow", (), {"column_csv": lambda *a, **k: None, "column_arrays": lambda *a, **k: None,
                                 "columns": store.columns})()


# Texts a CSV or JSON encoding could get wrong: separators, quotes, line ends, what reads as a null
# or a comment, a leading byte-order mark, escapes, non-ASCII.
ODD_TEXTS = ["\ufeffbyte-order mark first", "comma, inside", 'quote " inside', '"', '""', "new\nline",
             "carriage\rreturn", "crlf\r\n", " padded ", "\\N", "\\", "NULL", "#hash", "caf\u00e9 \u2013 \U0001F600",
             "\u2028line separator", "tab\there", ",", "'single'", "\\.", "\u05e9\u05dc\u05d5\u05dd"]


def test_the_statistics_frame_keeps_odd_texts_nulls_and_empty_texts_exactly(make_store):
    """The column-wise read (PostgreSQL: COPY as CSV, of every row, then of the rows changed since
    the snapshot it saved; SQLite: JSON arrays) gives the frame the row-by-row read gives: an empty
    text stays empty, a null stays null, every odd character survives, whatever row comes first."""
    from dataset import stats

    store = make_store("odd.sqlite3")
    on_postgres = store.dialect.name == "postgresql"
    # SQLite's JSON writes a float with 15 significant digits (as the quality checks round them);
    # PostgreSQL's COPY writes the shortest text that reads back as the same float
    scores = [None, 0.1, 0.125, 1.0, 0.0, 0.333, *([1 / 3, 5e-324, 0.7000000000000001] if on_postgres else [])]
    labels = [None, ""]   # what an optional label may be besides a text
    rows = []
    for i, text in enumerate(ODD_TEXTS):
        rows.append(record(f"{text}{i}", topic=text, difficulty=text[:50], question=text, answer=text * 3,
                           reasoning=text, case_citation="" if i % 3 else text,
                           sample_type=(labels + [text[:50]])[i % 3], provider=(labels + [text])[(i + 1) % 3],
                           model=(labels + [text])[(i + 2) % 3], batch_id=(labels + [text])[i % 3],
                           duplicate_of=None if i % 2 else text, quality_flags=[] if i % 4 == 1 else [text, "x,y", '"q"'],
                           quality_score=scores[i % len(scores)], simulated=bool(i % 2),
                           prompt_tokens=[None, 0, 2**53 - 1][i % 3], completion_tokens=[7, None][i % 2]))
    store.add_many(rows)
    store.delete(f"{ODD_TEXTS[5]}5")
    store.update(f"{ODD_TEXTS[6]}6", {"topic": "changed \"topic\", with a comma"})
    reference = same_frame_both_ways(store)   # PostgreSQL: every row read, then kept as the snapshot
    assert reference.height == len(ODD_TEXTS) - 1
    assert reference["id"][0] == f"{ODD_TEXTS[0]}0" and reference["sample_type"].null_count() > 0
    assert (reference["provider"].cast(pl.Utf8) == "").any() and reference["provider"].null_count() > 0
    # after the snapshot: an odd row more, one changed, one deleted (the saved rows and those read again)
    store.add(record("\ufeffa later row", topic='late "topic"\n', sample_type="", quality_flags=["\\N", " "]))
    store.update(f"{ODD_TEXTS[1]}1", {"topic": "new, topic", "answer": "A longer answer, \"quoted\"."})
    store.delete(f"{ODD_TEXTS[2]}2")
    read = store.column_csv(stats.LOAD_FIELDS, lengths=stats.LOAD_LENGTHS)
    assert (read is not None) == (store.dialect.name == "postgresql")
    if read is not None:
        # (at least these: a transaction still open anywhere on the server holds the horizon back)
        assert read.saved and set(read.replaced) >= {"\ufeffa later row", f"{ODD_TEXTS[1]}1", f"{ODD_TEXTS[2]}2"}
    assert same_frame_both_ways(store).height == len(ODD_TEXTS) - 1
    store.close()


def same_frame_both_ways(store: Store) -> pl.DataFrame:
    """The statistics frame a fresh load gives, checked equal (rows, order, types) to the one read
    row by row; returns it."""
    from dataset import stats

    reference_frame = stats.StatsFrame(store)
    reference_frame.store = row_by_row(store)
    reference = reference_frame.frame()
    fast = stats.StatsFrame(store).frame()
    assert fast.schema == reference.schema
    assert fast.to_dicts() == reference.to_dicts()
    return reference


def test_the_statistics_frame_folds_a_long_run_of_writes_in_as_it_goes(make_store, monkeypatch):
    from dataset import stats

    monkeypatch.setattr(stats, "PENDING_ROWS", 3)
    store = make_store("p.sqlite3")
    frame = stats.StatsFrame(store)
    frame.frame()
    for i in range(10):
        store.add(record(f"r{i}"))
        assert len(frame._pending) < 3   # never more than a few rows held as dicts
    store.delete("r4")
    assert frame.frame()["id"].to_list() == [f"r{i}" for i in range(10) if i != 4]
    store.close()


def test_a_file_from_the_release_with_an_uncompressed_json_copy_loses_it(tmp_path):
    """Version 6 (shipped) also kept every row's JSON uncompressed in `samples_json`; version 7 drops it."""
    from storage import schema

    path = tmp_path / "v6.sqlite3"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute(schema.VERSION_TABLE)
    db.execute("BEGIN")
    for migration in schema.MIGRATIONS[:6]:
        migration.apply(db)
        db.execute("INSERT INTO schema_migrations VALUES (?, ?, 'then')", (migration.version, migration.name))
    db.execute("COMMIT")
    db.close()
    store = Store(path)
    store.add(record("a"))
    db = sqlite3.connect(path)
    names = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
    db.close()
    assert "samples_json" not in names and not {"samples_json_delete", "samples_json_update"} & names
    assert "samples_json_blocks" in names and decoded(store)[0]["id"] == "a"
    store.close()


def test_json_reads_match_record_reads_on_either_backend(make_store):
    """The ready JSON (SQLite's blocks, PostgreSQL's per-row copy) is what a read returns."""
    store = make_store("both.sqlite3")
    store.add_many([record("a", provider="groq", latency=2, quality_flags=["short_answer"], reviewer="Ann"),
                    record("b", answer="Caf\u00e9 \u2013 \U0001F600", simulated=True), record("c")])
    store.update("a", {"answer": "Rewritten.", "difficulty": "expert"})
    store.delete("b")
    assert decoded(store) == json.loads(json.dumps(store.list()))
    assert decoded(store, filters={"difficulty": "expert"}) == json.loads(json.dumps(store.list({"difficulty": "expert"})))
    assert [r["id"] for r in decoded(store, newest_first=True)] == ["c", "a"]
    store.add_many([record("d", difficulty="expert"), record("e")])
    for order in (False, True):     # a page at an offset: its rows picked first, then read
        for limit, offset in ((1, 1), (2, 1), (5, 2), (None, 3)):
            page = [r["id"] for r in store.list(limit=limit, offset=offset, newest_first=order)]
            assert page == [r["id"] for r in store.list(newest_first=order)][offset:][:limit]
            assert [r["id"] for r in decoded(store, limit=limit, offset=offset, newest_first=order)] == page
    assert [r["id"] for r in decoded(store, filters={"difficulty": "expert"}, limit=1, offset=1, newest_first=True)] == ["a"]
    assert json.loads(json_blocks.zstd.decompress(b"".join(store.iter_json_zstd()))) == json.loads(json.dumps(store.list()))
    store.close()
