"""`/api/data`'s blocks compressed again in idle time (`dataset.recompress`, `Store.recompress_json_block`),
consecutive ones merged: the array still decodes to the same rows, a change still drops and re-seals
its block (never overwritten by a stale recompressed body), and a stop ends the work within one piece."""
from __future__ import annotations

import json
import random
import sqlite3
import threading
import time

import pytest

try:
    from compression import zstd
except ImportError:
    from backports import zstd

from dataset.recompress import Recompressor
from storage import json_blocks
from storage.store import Store
from tests.conftest import wait_for
from tests.test_data_blocks import blocks, expected, unpacked
from tests.test_store_copies import record


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(json_blocks, "BLOCK_ROWS", 4)


def levels(path) -> list[tuple[int, int]]:
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT first_seq, level FROM samples_json_blocks ORDER BY first_seq").fetchall()
    finally:
        db.close()


def prose(rng: random.Random, words: int) -> str:
    vocabulary = [f"{a}{b}" for a in ("lease", "tort", "duty", "claim", "court", "remedy") for b in range(40)]
    return " ".join(rng.choices(vocabulary, k=words))


def test_recompressed_blocks_decode_to_the_same_rows_and_are_smaller(tmp_path, small_blocks):
    store = Store(tmp_path / "r.sqlite3")
    rng = random.Random(1)
    store.add_many([record(f"r{i}", answer=prose(rng, 400)) for i in range(10)])
    assert levels(store.path) == [(1, json_blocks.BLOCK_LEVEL), (5, json_blocks.BLOCK_LEVEL)]
    before = len(b"".join(store.iter_json_zstd()))
    worker = Recompressor(store, idle_seconds=0, cpu_share=1.0)
    worker.start()
    try:
        assert worker.idle.wait(30)
    finally:
        worker.stop(5)
    assert blocks(store.path) == [(1, 8, 8)] and levels(store.path) == [(1, json_blocks.ARCHIVE_LEVEL)]   # one block now
    assert worker.blocks == 1 and worker.saved_bytes > 0
    comma = len(zstd.compress(b",", level=json_blocks.STREAM_LEVEL))   # the frame that joined the two blocks
    assert len(b"".join(store.iter_json_zstd())) == before - worker.saved_bytes - comma
    assert unpacked(store) == expected(store)
    store.update("r2", {"answer": "Edited."})                    # still drops the block holding it
    assert levels(store.path) == []
    store.add_many([record("r10"), record("r11")])              # the next sealing write seals its rows again, fast
    assert levels(store.path) == [(1, json_blocks.BLOCK_LEVEL), (5, json_blocks.BLOCK_LEVEL),
                                  (9, json_blocks.BLOCK_LEVEL)]
    assert unpacked(store)[2]["answer"] == "Edited." and unpacked(store) == expected(store)
    store.close()


def test_blocks_are_merged_up_to_the_archive_size_and_never_across_a_gap(tmp_path, small_blocks):
    store = Store(tmp_path / "m.sqlite3")
    store.add_many([record(f"r{i}") for i in range(24)])         # six blocks of 4 rows
    assert [b[2] for b in blocks(store.path)] == [4] * 6
    store.delete("r9")                                           # drops the third block: rows 9-12 lie loose
    while store.recompress_json_block() is not None:
        pass
    assert blocks(store.path) == [(1, 8, 8), (13, 24, 12)]       # the loose rows keep the blocks apart
    store.add_many([record(f"s{i}") for i in range(8)])          # seals rows 9-12 and two blocks after row 24
    while store.recompress_json_block() is not None:
        pass
    # in order, as many rows as ARCHIVE_BLOCKS blocks hold at most: 8 + 3, then 12 + 4, then the last 4
    assert blocks(store.path) == [(1, 12, 11), (13, 28, 16), (29, 32, 4)]
    assert levels(store.path) == [(1, json_blocks.ARCHIVE_LEVEL), (13, json_blocks.ARCHIVE_LEVEL),
                                  (29, json_blocks.ARCHIVE_LEVEL)]
    assert unpacked(store) == expected(store)
    store.close()


def test_blocks_changed_while_they_are_merged_are_not_overwritten(tmp_path, small_blocks, monkeypatch):
    store = Store(tmp_path / "g.sqlite3")
    store.add_many([record(f"r{i}") for i in range(8)])          # two blocks
    monkeypatch.setattr(json_blocks, "RECOMPRESS_PIECE", 64)
    changed = []

    def stop() -> bool:   # the second block's row is edited meanwhile; the first block is untouched
        if not changed:
            changed.append(store.update("r6", {"answer": "Edited meanwhile."}))
        return False

    assert store.recompress_json_block(stop=stop) == (0, 0)
    assert blocks(store.path) == [(1, 4, 4)]                      # the first stays as it was, nothing merged
    assert unpacked(store)[6]["answer"] == "Edited meanwhile." and unpacked(store) == expected(store)
    store.close()


def test_a_block_changed_while_it_is_compressed_again_is_not_overwritten(tmp_path, small_blocks, monkeypatch):
    store = Store(tmp_path / "c.sqlite3")
    store.add_many([record(f"r{i}") for i in range(4)])
    monkeypatch.setattr(json_blocks, "RECOMPRESS_PIECE", 64)
    changed = []

    def stop() -> bool:   # called between pieces: an edit lands meanwhile, and a write seals the block again
        if not changed:
            changed.append(store.update("r1", {"answer": "Edited meanwhile."}))
            store.add_many([record("r4")])
        return False

    assert store.recompress_json_block(stop=stop) == (0, 0)      # the block it read is gone: nothing stored
    assert levels(store.path) == [(1, json_blocks.BLOCK_LEVEL)]
    assert unpacked(store)[1]["answer"] == "Edited meanwhile." and unpacked(store) == expected(store)
    assert store.recompress_json_block()[1] > 0 and store.recompress_json_block() is None
    assert unpacked(store) == expected(store)
    store.close()


def test_a_stop_ends_the_work_within_one_piece(tmp_path, small_blocks, monkeypatch):
    store = Store(tmp_path / "s.sqlite3")
    rng = random.Random(2)
    monkeypatch.setattr(json_blocks, "BLOCK_ROWS", 200)
    store.add_many([record(f"r{i}", answer=prose(rng, 5000)) for i in range(200)])   # one block of ~8 MB
    monkeypatch.setattr(json_blocks, "RECOMPRESS_PIECE", 1 << 14)
    started = threading.Event()
    original = json_blocks.recompress

    def watched(*args, **kwargs):
        started.set()
        return original(*args, **kwargs)

    monkeypatch.setattr(json_blocks, "recompress", watched)
    worker = Recompressor(store, idle_seconds=0, cpu_share=1.0)
    worker.start()
    assert started.wait(30)
    began = time.monotonic()
    worker.stop(timeout=10)
    assert time.monotonic() - began < 1.0 and not worker._thread.is_alive()
    assert levels(store.path) == [(1, json_blocks.BLOCK_LEVEL)] and worker.blocks == 0
    store.close()


def test_a_stop_while_the_worker_is_starting_waits_for_it(tmp_path, monkeypatch):
    """The warm-up thread starts the worker while a shutdown may stop it: the stop waits for the
    start (without the lock it would join a thread not yet started, a RuntimeError), and a start
    after a stop does nothing."""
    store = Store(tmp_path / "l.sqlite3")
    worker = Recompressor(store, idle_seconds=0, cpu_share=1.0)
    entered, release, errors = threading.Event(), threading.Event(), []

    def stopping() -> None:
        try:
            worker.stop(timeout=5)
        except Exception as exc:   # noqa: BLE001 - what the test looks for
            errors.append(exc)

    starter, stopper = threading.Thread(target=worker.start), threading.Thread(target=stopping)

    class SlowStart(threading.Thread):
        def start(self) -> None:
            entered.set()
            release.wait(5)
            super().start()

    monkeypatch.setattr(threading, "Thread", SlowStart)
    starter.start()
    assert entered.wait(5)
    stopper.start()
    stopper.join(0.5)          # without the lock, the stop has failed by now
    release.set()
    starter.join(5)
    stopper.join(5)
    assert errors == [] and not stopper.is_alive() and not worker._thread.is_alive()
    monkeypatch.undo()
    worker.start()             # after a stop: nothing
    assert not worker._thread.is_alive()
    store.close()


@pytest.mark.sqlite_only   # PostgreSQL keeps no blocks (the array is compressed on the way)
def test_the_server_compresses_blocks_again_once_writes_stop(make_app, small_blocks):
    app = make_app(RECOMPRESS_IDLE_SECONDS=0.05)
    services = app.extensions["services"]
    client = app.test_client()
    for i in range(9):
        assert client.post("/api/add", json=record(f"h{i}", question=f"Is clause {i} a penalty?")).status_code == 200
    wait_for(lambda: services.recompressor.idle.is_set() and levels(services.store.path) ==
             [(1, json_blocks.ARCHIVE_LEVEL)])
    plain = client.get("/api/data", headers={"Accept-Encoding": "identity"})
    packed = client.get("/api/data", headers={"Accept-Encoding": "zstd"})
    assert json.loads(zstd.decompress(packed.get_data())) == plain.get_json() and len(plain.get_json()) == 9
