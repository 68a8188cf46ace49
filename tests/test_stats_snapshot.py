"""The statistics snapshot of PostgreSQL mode (`storage.postgres.stats_snapshot`): a start reads
the saved rows and the rows changed since, and the frame is still exactly the one read row by row;
the log rows it needs outlive the change feed's prune; anything else removing them, or a TRUNCATE,
retires it; it is saved afresh when its log grows, while other servers' changes go on arriving."""
from __future__ import annotations

import pytest

from dataset import stats
from storage.postgres import stats_snapshot
from tests.test_store import record
from tests.test_store_copies import same_frame_both_ways

pytestmark = pytest.mark.postgres_only


def load(store):
    read = store.column_csv(stats.LOAD_FIELDS, lengths=stats.LOAD_LENGTHS)
    stats_snapshot.wait_for_saves()   # a first read saves its snapshot in the background
    return read


def horizon(store) -> int | None:
    with store.database.reading() as db:
        row = db.execute("SELECT horizon::text FROM stats_snapshot").fetchone()
    return int(row[0]) if row else None


def execute(store, sql: str) -> None:
    with store.database.transaction() as db:
        db.execute(sql)


def prune_now(store) -> None:
    """The change feed's prune step, now, with every log row older than its retention."""
    execute(store, "UPDATE sample_changes SET at = now() - interval '1 day'")
    store._feed._pruned = float("-inf")
    store._feed.poll()
    stats_snapshot.wait_for_saves()   # a fresh snapshot is saved in a thread of its own


def test_a_start_reads_the_snapshot_and_the_rows_another_server_changed_since(make_store):
    writer, reader = make_store("two"), make_store("two")
    writer.add_many([record(f"s{n}", topic=f"Tort Law - {n % 3}") for n in range(30)])
    assert load(reader).saved == b"" and horizon(reader) is not None   # every row read, then saved
    same_frame_both_ways(reader)
    writer.update("s3", {"topic": "Contract Law - Formation", "answer": "Longer answer now."})
    writer.delete("s4")
    writer.add(record("late"))
    read = load(reader)
    # the ids logged since the snapshot: these three, and more if a transaction still open anywhere
    # on the server held the snapshot's horizon back (then read again too: the same answer)
    assert read.saved and set(read.replaced) >= {"s3", "s4", "late"}
    assert read.fresh.count(b"\n") == len(read.replaced) - 1   # all as they are now; s4 is gone
    frame = same_frame_both_ways(reader)
    assert frame.height == 30 and frame["id"].to_list()[-1] == "late"


def test_the_prune_keeps_what_the_snapshot_needs_and_any_other_delete_retires_it(make_store):
    store = make_store("prune")
    store.add_many([record(f"s{n}") for n in range(5)])
    load(store)
    saved_at = horizon(store)
    store.update("s1", {"difficulty": "expert"})
    prune_now(store)
    with store.database.reading() as db:
        kept = db.execute("SELECT id, xid >= CAST(CAST(? AS text) AS xid8) FROM sample_changes", (saved_at,)).fetchall()
    # what was logged before the horizon went (the five adds, unless an open transaction elsewhere
    # held the horizon back), what came after stays
    assert ("s1", True) in [tuple(row) for row in kept] and all(after for _, after in kept)
    assert "s1" in load(store).replaced
    store.update("s2", {"difficulty": "expert"})
    execute(store, "DELETE FROM sample_changes")   # as a server of an older version prunes
    assert load(store).saved == b""                 # not used: every row read again (and saved)
    same_frame_both_ways(store)
    assert horizon(store) >= saved_at


def test_truncating_the_samples_retires_the_snapshot(make_store):
    store = make_store("truncate")
    store.add_many([record(f"s{n}") for n in range(4)])
    load(store)
    execute(store, "TRUNCATE samples")
    read = load(store)
    assert read.saved == b"" and read.fresh == b""
    assert same_frame_both_ways(store).height == 0


def test_a_snapshot_is_saved_afresh_when_its_kept_log_grows(make_store, monkeypatch):
    store = make_store("refresh")
    store.add_many([record(f"s{n}") for n in range(3)])
    load(store)
    store.add_many([record(f"t{n}") for n in range(4)])
    monkeypatch.setattr(stats_snapshot, "REFRESH_CHANGES", 1000)
    prune_now(store)
    assert load(store).saved.count(b"\n") == 3    # four (or a few more) kept rows: not yet
    monkeypatch.setattr(stats_snapshot, "REFRESH_CHANGES", 3)
    prune_now(store)
    assert load(store).saved.count(b"\n") == 7    # saved afresh, with every row
    assert same_frame_both_ways(store).height == 7


def test_a_snapshot_of_other_columns_is_not_used(make_store):
    store = make_store("columns")
    store.add_many([record(f"s{n}") for n in range(3)])
    assert store.column_csv(("id", "topic")).saved == b""
    stats_snapshot.wait_for_saves()
    assert load(store).saved == b""                 # another request: every row read, and saved instead
    assert load(store).saved and store.column_csv(("id", "topic")).saved == b""
    stats_snapshot.wait_for_saves()


def test_a_first_read_answers_before_its_snapshot_is_saved(make_store, monkeypatch):
    """The first statistics after a start do not wait for the snapshot to be compressed and written."""
    import threading

    store = make_store("early")
    store.add_many([record(f"s{n}") for n in range(3)])
    release, real_save = threading.Event(), stats_snapshot.save
    monkeypatch.setattr(stats_snapshot, "save", lambda *args: release.wait(10) and real_save(*args))
    read = store.column_csv(stats.LOAD_FIELDS, lengths=stats.LOAD_LENGTHS)
    assert read.fresh.count(b"\n") == 3 and horizon(store) is None   # answered; nothing saved yet
    release.set()
    stats_snapshot.wait_for_saves()
    assert horizon(store) is not None and load(store).saved.count(b"\n") == 3


def test_other_servers_changes_arrive_while_a_fresh_snapshot_is_being_saved(make_store, monkeypatch):
    """Saving a fresh snapshot takes seconds at 1M rows; the change feed does not wait for it."""
    import threading

    from tests.conftest import wait_for

    writer, reader = make_store("slow"), make_store("slow")
    seen: list[str] = []
    reader.on_change(lambda change: seen.extend(r["id"] for r in change.records))
    release = threading.Event()
    monkeypatch.setattr(reader._feed, "refresh", lambda columns: release.wait(10))
    monkeypatch.setattr(stats_snapshot, "due", lambda session: "columns")
    reader._feed._pruned = float("-inf")   # the next poll prunes, and a fresh snapshot is due
    polled = threading.Event()
    threading.Thread(target=lambda: (reader._feed.poll(), polled.set()), daemon=True).start()
    try:
        assert polled.wait(5), "a poll waited for the snapshot being saved"
        writer.add(record("during"))
        wait_for(lambda: reader._feed.poll() is not None and "during" in seen, timeout=5)
        assert not release.is_set()
    finally:
        release.set()
        stats_snapshot.wait_for_saves()
