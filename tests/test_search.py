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

