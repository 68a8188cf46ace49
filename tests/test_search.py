"""Full-text search: the index follows every write, and the query is always plain text."""
from __future__ import annotations

import sqlite3

import pytest

from tests.test_store_copies import back_to_version_3
from storage.store import Store
from tests.test_store import record


@pytest.fixture
def store(make_store):
    return make_store("search.sqlite3")


def ids(rows):
    return [r["id"] for r in rows]


def test_words_are_found_in_any_searchable_field_or_only_the_named_one(store):
    store.add(record("q", question="Was the snail in the bottle foreseeable?"))
    store.add(record("a", answer="The manufacturer owed a duty to the ultimate consumer."))
    store.add(record("c", case_citation="Caparo Industries plc v Dickman [1990] UKHL 2"))
    assert ids(store.search("snail in the bottle", None, 10)) == ["q"]
    assert ids(store.search("ULTIMATE consumer", None, 10)) == ["a"]
    assert ids(store.search("Caparo", None, 10)) == ["c"]
    assert ids(store.search("Caparo", "question", 10)) == []
    assert ids(store.search("[1990] UKHL", "case_citation", 10)) == ["c"]
    assert ids(store.search("manufact", None, 10)) == ["a"]          # the last word may be a prefix


@pytest.mark.parametrize("text", ['"duty', 'duty OR snail', "NEAR(duty consumer)", "answer: duty", "duty*",
                                  "(duty", "-duty", "^duty", "duty AND NOT x", "{question}: duty"])
def test_query_syntax_is_plain_text(store, text):
    store.add(record("a", answer="The manufacturer owed a duty to the ultimate consumer."))
    store.add(record("b", answer=f"Here the text reads {text} exactly."))
    assert ids(store.search(text, None, 10)) == ["b"]


def test_updates_and_deletes_reach_the_index(store):
    store.add(record("x", question="Is a promise without consideration binding?"))
    store.update("x", {"question": "Does promissory estoppel suspend rights?"})
    assert store.search("consideration", None, 10) == []
    assert ids(store.search("promissory estoppel", None, 10)) == ["x"]
    store.delete("x")
    assert store.search("promissory estoppel", None, 10) == []


def test_the_first_matches_come_in_insertion_order_whatever_step_finds_them(store, monkeypatch):
    """PostgreSQL's index finds rows out of order, so search walks the first rows, then checks the
    index's candidates in growing chunks (`storage.ordered_search`): with tiny steps, every limit
    gives exactly the first matches in insertion order, as one full scan would. Rows holding the
    words but not the text (and deleted rows) sit between them."""
    from storage import ordered_search

    monkeypatch.setattr(ordered_search, "WALK_ROWS", 3)
    monkeypatch.setattr(ordered_search, "FIRST_CHUNK", 2)
    expected = []
    for n in range(40):
        if n % 3 == 0:
            question = f"Is the duty of care owed here ({n})?"            # holds the text
            expected.append(f"m{n}")
        elif n % 3 == 1:
            question = f"Of care, is a duty owed ({n})?"                  # the words, not the text
        else:
            question = f"Was the contract frustrated ({n})?"
        store.add(record(f"m{n}", question=question))
    for n in (9, 21):                                                   # gaps in the order
        store.delete(f"m{n}")
        expected.remove(f"m{n}")
    for n in (3, 6, 12):          # rewritten rows move to the table's end in PostgreSQL, keeping their place here
        store.update(f"m{n}", {"answer": f"Rewritten answer {n}."})
    for limit in (1, 2, 3, 5, 8, 13, 50):
        assert ids(store.search("duty of care", None, limit)) == expected[:limit], limit
    assert ids(store.search("DUTY OF CARE OWED HERE (39)", None, 5)) == ["m39"]
    assert store.search("duty of care", None, 0) == []


@pytest.mark.sqlite_only
def test_rows_stored_before_the_index_existed_are_searchable(tmp_path):
    path = tmp_path / "old.sqlite3"
    store = Store(path)
    store.add(record("old", question="Is an easement capable of existing over a car park?"))
    store.close()
    db = sqlite3.connect(path)            # back to version 2: no index, as an older server left it
    db.executescript("DROP TABLE samples_fts; DROP TRIGGER IF EXISTS samples_fts_insert; "
                     "DROP TRIGGER IF EXISTS samples_fts_delete; DROP TRIGGER IF EXISTS samples_fts_update; "
                     "DELETE FROM schema_migrations WHERE version >= 3;")
    db.close()
    back_to_version_3(path)                # and what later versions added
    reopened = Store(path)
    assert ids(reopened.search("easement", None, 10)) == ["old"]
    reopened.close()


def test_a_word_the_text_goes_on_after_is_whole_and_the_last_may_be_a_prefix():
    """Only a word the text ends in (or that a letter follows) is looked up as a prefix: at 1M
    rows in PostgreSQL a prefix such as `ac:*` gathers every word starting "ac" and took 14 s."""
    from storage.dialect import POSTGRES
    from storage.store_reads import search_words

    assert search_words("[1932] AC 562") == (["1932", "AC", "562"], [True, True, False])
    assert search_words("snail_bott") == (["snail", "bott"], [True, False])
    assert search_words("v Dickman.") == (["v", "Dickman"], [True, True])
    assert search_words("café au") == (["café", "au"], [True, False])
    words, whole = search_words("[1932] AC 562")
    assert POSTGRES.search_match(words, ["answer"], whole)[1] == "'1932' & 'AC' & '562':*"


def test_phrases_find_their_rows_whether_the_last_word_is_whole_or_a_prefix(store):
    store.add(record("c", case_citation="Caparo Industries plc v Dickman [1990] UKHL 2"))
    store.add(record("d", case_citation="Donoghue v Stevenson [1932] AC 562"))
    other = "Hunter v Canary Wharf Ltd [1997] UKHL 14"
    store.add(record("s", question="Was the snail_in the bottle foreseeable?", case_citation=other))
    store.add(record("x", answer="The Acts of 1932 and 5620 others.", case_citation=other))
    for text, expected in [("[1932] AC 562", ["d"]), ("[1932] AC 56", ["d"]), ("v Dick", ["c"]), ("v Dickman ", ["c"]),
                           ("snail_in the bott", ["s"]), ("[1990] UK", ["c"]), ("UKHL 2", ["c"]), ("1932", ["d", "x"]),
                           ("the ac", ["x"]), ("Acts of 1932 and 562", ["x"]), ("Dickman [19", ["c"])]:
        assert ids(store.search(text, None, 10)) == expected, text


@pytest.mark.postgres_only
def test_searches_are_planned_for_their_own_term(store, monkeypatch):
    """psycopg prepares a statement it has run five times, and PostgreSQL then keeps one plan for
    every term: at 1M rows that plan made `Donoghue` take 8.5 s instead of 0.23 s. After a dozen
    searches on one connection, none of the search's statements is prepared."""
    from contextlib import contextmanager

    for n in range(60):
        store.add(record(f"p{n}", question=f"Was the {'snail' if n % 2 else 'ginger beer'} foreseeable ({n})?"))
    with store.database.reading() as session:
        @contextmanager
        def the_same_session():
            yield session

        def prepared() -> set[str]:
            return {row[0] for row in session.execute("SELECT statement FROM pg_prepared_statements")}

        monkeypatch.setattr(store.database, "reading", the_same_session)
        before = prepared()
        for n in range(12):
            assert len(store.search("snail" if n % 2 else "ginger beer", None, 5 + n)) == 5 + n
        assert prepared() - before == set()
