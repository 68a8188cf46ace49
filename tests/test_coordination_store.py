"""The PostgreSQL rows several servers coordinate through: registry, batch lease, fencing."""
from __future__ import annotations

import threading

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from storage.coordination import BatchLeases, ServerRegistry, fence
from storage.coordination import transactions
from storage.coordination_schema import install
from tests.postgres import postgres_url, shared_pool  # noqa: F401 - fixtures
from tests.conftest import wait_for

pytestmark = pytest.mark.postgres_only


@pytest.fixture
def pool(shared_pool: ConnectionPool) -> ConnectionPool:
    return shared_pool


def leases(pool: ConnectionPool, server: str, seconds: float = 30) -> BatchLeases:
    return BatchLeases(transactions(pool), server, lease_seconds=seconds)


def test_one_lease_system_wide(pool):
    a, b = leases(pool, "a"), leases(pool, "b")
    assert a.acquire("batch_1") is None
    assert b.acquire("batch_2") == "batch_1"          # 409 names the running batch
    assert a.acquire("batch_3") == "batch_1"
    holder = b.holder()
    assert holder.batch_id == "batch_1" and holder.owner == "a" and holder.seconds_left > 25
    assert not b.release("batch_1")                   # not b's to release
    assert a.release("batch_1")
    assert b.acquire("batch_2") is None


def test_servers_starting_together_get_one_lease(pool):
    """Twelve servers start a batch at the same instant: exactly one gets the lease."""
    barrier = threading.Barrier(12)
    results: dict[str, str | None] = {}

    def start(n: int) -> None:
        barrier.wait()
        results[f"s{n}"] = leases(pool, f"s{n}").acquire(f"batch_{n}")

    threads = [threading.Thread(target=start, args=(n,)) for n in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [server for server, conflict in results.items() if conflict is None]
    assert len(winners) == 1
    assert set(results.values()) == {None, f"batch_{winners[0][1:]}"}


def test_renewal_stop_and_loss(pool):
    a, b = leases(pool, "a", seconds=0.3), leases(pool, "b", seconds=30)
    assert a.acquire("batch_1") is None
    assert a.renew("batch_1") == "held"
    assert b.take_over() is None                      # alive: not taken
    assert b.request_stop("batch_other") is None      # only the named batch
    assert b.request_stop().batch_id == "batch_1"
    assert a.renew("batch_1") == "stop"
    wait_for(lambda: b.holder().seconds_left < 0, timeout=5)
    taken = b.take_over()
    assert taken is not None and taken.batch_id == "batch_1" and taken.previous_owner == "a"
    assert taken.stop_requested and taken.takeovers == 1
    assert a.renew("batch_1") == "lost"               # the old owner learns it at its next renewal
    assert b.renew("batch_1") == "stop"


def test_hand_over_ends_the_lease_at_once(pool):
    a, b = leases(pool, "a"), leases(pool, "b")
    assert a.acquire("batch_1") is None
    a.hand_over("batch_1")
    taken = b.take_over()
    assert taken is not None and taken.owner == "b"


def test_exactly_one_server_takes_an_expired_lease_over(pool):
    assert leases(pool, "dead", seconds=0.05).acquire("batch_1") is None
    wait_for(lambda: leases(pool, "x").holder().seconds_left < 0, timeout=5)
    barrier = threading.Barrier(8)
    won: list[str] = []

    def try_take(n: int) -> None:
        barrier.wait()
        if leases(pool, f"s{n}").take_over() is not None:
            won.append(f"s{n}")

    threads = [threading.Thread(target=try_take, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1
    assert leases(pool, "x").holder().owner == won[0]


def test_registry_lists_live_servers(pool):
    a = ServerRegistry(transactions(pool), "host:1:1", live_seconds=0.5)
    b = ServerRegistry(transactions(pool), "host:2:2", live_seconds=0.5)
    a.heartbeat("http://127.0.0.1:1")
    b.heartbeat("http://127.0.0.1:2")
    live = a.live()
    assert [s["id"] for s in live] == ["host:1:1", "host:2:2"]
    assert live[0]["self"] and not live[1]["self"] and live[1]["address"] == "http://127.0.0.1:2"

    def only_a_left() -> bool:
        a.heartbeat()
        return [s["id"] for s in a.live()] == ["host:1:1"]

    wait_for(only_a_left, timeout=5)                  # b stopped beating: gone after live_seconds
    a.leave()
    assert [s["id"] for s in b.live()] == []


def test_fence_refuses_samples_of_a_batch_leased_to_another_server(pool):
    with transactions(pool)() as db:
        db.execute("CREATE TABLE samples (id text PRIMARY KEY, batch_id text)")
        install(db)                                   # the trigger, now that `samples` exists
    assert leases(pool, "owner").acquire("batch_1") is None

    def insert(server: str, sample: str, batch: str | None) -> None:
        with transactions(pool)() as db:
            fence(db, server)
            db.execute("INSERT INTO samples VALUES (%s, %s)", (sample, batch))

    insert("owner", "s1", "batch_1")
    insert("other", "s2", None)                       # not a batch sample
    insert("other", "s3", "batch_9")                  # no lease on that batch
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="run by server owner"):
        insert("other", "s4", "batch_1")
    with transactions(pool)() as db:
        assert db.execute("SELECT count(*) FROM samples").fetchone()[0] == 3


def test_takeover_waits_for_a_sample_being_stored(pool):
    """The old owner is storing a sample when its lease expires: the takeover waits for that
    transaction, so the new owner's count includes the sample (none lost, none beyond target)."""
    with transactions(pool)() as db:
        db.execute("CREATE TABLE samples (id text PRIMARY KEY, batch_id text)")
        install(db)
    assert leases(pool, "old", seconds=0.2).acquire("batch_1") is None
    inserted, finish = threading.Event(), threading.Event()

    def slow_store() -> None:
        with transactions(pool)() as db:
            fence(db, "old")
            db.execute("INSERT INTO samples VALUES ('s1', 'batch_1')")
            inserted.set()
            finish.wait(10)

    storer = threading.Thread(target=slow_store)
    storer.start()
    assert inserted.wait(5)
    new = leases(pool, "new")
    wait_for(lambda: new.holder().seconds_left < 0, timeout=5)   # expired, the insert still open
    taken: list = []
    taker = threading.Thread(target=lambda: taken.append(new.take_over()))
    taker.start()

    def takeover_waits() -> bool:
        with transactions(pool)() as db:
            return db.execute("SELECT count(*) FROM pg_locks WHERE NOT granted").fetchone()[0] > 0

    wait_for(takeover_waits, timeout=5)               # blocked by the sample being stored
    assert not taken
    finish.set()
    storer.join()
    taker.join()
    assert taken[0] is not None and taken[0].owner == "new"
    with transactions(pool)() as db:
        assert db.execute("SELECT count(*) FROM samples WHERE batch_id = 'batch_1'").fetchone()[0] == 1
