"""The full `/api/data` array sent pre-compressed (`storage.json_blocks`): blocks written with the
rows, rows between them compressed on the way, one zstd stream that decodes to exactly the array
an uncompressed request gets, whatever was added, edited or deleted since."""
from __future__ import annotations

import json
import sqlite3

import pytest

try:
    from compression import zstd
except ImportError:
    from backports import zstd

from storage import json_blocks
from storage.store import Store
from tests.test_store_copies import record


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(json_blocks, "BLOCK_ROWS", 4)


def blocks(path) -> list[tuple[int, int, int]]:
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT first_seq, last_seq, rows FROM samples_json_blocks ORDER BY first_seq").fetchall()
    finally:
        db.close()


def unpacked(store: Store) -> list[dict]:
    return json.loads(zstd.decompress(b"".join(store.iter_json_zstd())))


def expected(store: Store) -> list[dict]:
    return json.loads(json.dumps(store.list()))


@pytest.mark.sqlite_only   # PostgreSQL keeps no blocks (Store.iter_json_zstd)
def test_blocks_follow_adds_edits_and_deletes(tmp_path, small_blocks):
    store = Store(tmp_path / "b.sqlite3")
    assert unpacked(store) == []
    store.add_many([record(f"r{i}") for i in range(3)])
    assert blocks(store.path) == [] and unpacked(store) == expected(store)   # too few: compressed on the way
    store.add_many([record(f"r{i}") for i in range(3, 10)])
    assert blocks(store.path) == [(1, 4, 4), (5, 8, 4)] and unpacked(store) == expected(store)
    store.update("r5", {"answer": "Edited."})                    # drops the block holding it
    assert blocks(store.path) == [(1, 4, 4)]
    assert unpacked(store)[5]["answer"] == "Edited." and unpacked(store) == expected(store)
    store.delete("r1")
    assert blocks(store.path) == [] and unpacked(store) == expected(store)
    store.add(record("r10"))                                     # the next write seals the gaps again
    assert blocks(store.path) == [(1, 5, 4), (6, 9, 4)]                 # seq 2 is gone; 10 and 11 wait
    assert unpacked(store) == expected(store) and len(expected(store)) == 10
    store.close()


@pytest.mark.sqlite_only   # PostgreSQL keeps no blocks (Store.iter_json_zstd)
def test_a_row_changed_outside_the_store_drops_its_block(tmp_path, small_blocks):
    path = tmp_path / "o.sqlite3"
    store = Store(path)
    store.add_many([record(f"r{i}") for i in range(8)])
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE samples SET answer = 'By hand.' WHERE id = 'r6'")
    db.close()
    assert blocks(path) == [(1, 4, 4)] and unpacked(store)[6]["answer"] == "By hand."
    assert unpacked(store) == expected(store)
    store.close()


@pytest.mark.sqlite_only   # PostgreSQL keeps no blocks (Store.iter_json_zstd)
def test_rows_waiting_for_a_block_are_sealed_as_they_are_now(tmp_path, small_blocks):
    """The store keeps the JSON of the rows it wrote until a block takes them (no reading back); a
    row changed meanwhile, by this store or by another process, is sealed as changed."""
    path = tmp_path / "w.sqlite3"
    store = Store(path)
    store.add_many([record(f"r{i}") for i in range(3)])      # too few for a block: they wait
    db = sqlite3.connect(path)   # another process: this store hears nothing of its write
    with db:
        db.execute("UPDATE samples SET answer = 'Elsewhere.', updated_at = '2030-01-01T00:00:00+00:00' "
                   "WHERE id = 'r1'")
    db.close()
    store.update("r2", {"answer": "Here."})
    store.add_many([record("r3"), record("r4")])              # seals r0..r3 in one block
    assert blocks(path) == [(1, 4, 4)]
    array = unpacked(store)
    assert [row["answer"] for row in array[1:3]] == ["Elsewhere.", "Here."] and array == expected(store)
    store.close()


def test_the_full_array_over_http_is_the_same_compressed_or_not(make_app, small_blocks):
    client = make_app().test_client()
    for i in range(11):
        assert client.post("/api/add", json=record(f"h{i}", question=f"Is clause {i} a penalty?")).status_code == 200
    plain = client.get("/api/data", headers={"Accept-Encoding": "identity"})
    packed = client.get("/api/data", headers={"Accept-Encoding": "gzip, deflate, br, zstd"})
    assert packed.headers["Content-Encoding"] == "zstd" and packed.headers["X-Total-Count"] == "11"
    assert json.loads(zstd.decompress(packed.get_data())) == plain.get_json() and len(plain.get_json()) == 11
    refused = client.get("/api/data", headers={"Accept-Encoding": "zstd;q=0, gzip"})
    assert refused.headers["Content-Encoding"] == "gzip"
    page = client.get("/api/data?limit=3&offset=2", headers={"Accept-Encoding": "zstd"})   # not the whole array
    assert [r["id"] for r in json.loads(zstd.decompress(page.get_data()))] == ["h2", "h3", "h4"]
