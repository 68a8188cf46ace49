"""The limiter's records in PostgreSQL: each transaction reads and writes them under row locks."""
from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from typing import Any

import pytest
from psycopg_pool import ConnectionPool

from storage.coordination import transactions
from storage.shared_limiter import PostgresLimiterStore
from tests.postgres import postgres_url, shared_pool  # noqa: F401 - fixtures

pytestmark = pytest.mark.postgres_only


@dataclass
class Counter:
    count: int = 0
    seen: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Counter":
        return cls(**data)


@pytest.fixture
def pool(shared_pool: ConnectionPool) -> ConnectionPool:
    return shared_pool


def test_records_are_created_read_and_written(pool):
    store = PostgresLimiterStore(transactions(pool), Counter.from_dict)

    def bump(records: dict[str, Counter]) -> int:
        for key, record in records.items():
            record.count += 1
            record.seen.append(key)
        return len(records)

    assert store.transact(["groq/a", "groq/*"], bump) == 2
    assert store.transact(["groq/a"], bump) == 1
    assert {k: v.count for k, v in store.read().items()} == {"groq/*": 1, "groq/a": 2}
    # another server's store sees the same records
    assert PostgresLimiterStore(transactions(pool), Counter.from_dict).read()["groq/a"].seen == ["groq/a", "groq/a"]


def test_a_failing_function_changes_nothing(pool):
    store = PostgresLimiterStore(transactions(pool), Counter.from_dict)

    def fail(records: dict[str, Counter]) -> None:
        next(iter(records.values())).count = 99
        raise RuntimeError("boom")

    store.transact(["k"], lambda records: None)
    with pytest.raises(RuntimeError):
        store.transact(["k"], fail)
    with pytest.raises(RuntimeError):
        store.transact(["new"], fail)
    assert {k: v.count for k, v in store.read().items()} == {"k": 0}


def test_concurrent_servers_never_lose_an_update(pool):
    """Eight "servers" (stores) bump the same two records 25 times each: no update is lost, no
    deadlock although they name the keys in different orders. Without the row lock, lost."""
    stores = [PostgresLimiterStore(transactions(pool), Counter.from_dict) for _ in range(8)]
    barrier = threading.Barrier(len(stores))

    def bump(records: dict[str, Counter]) -> None:
        for record in records.values():
            record.count += 1

    def work(n: int) -> None:
        barrier.wait()
        keys = ["m/a", "m/*"] if n % 2 else ["m/*", "m/a"]
        for _ in range(25):
            stores[n].transact(keys, bump)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {k: v.count for k, v in stores[0].read().items()} == {"m/*": 200, "m/a": 200}


def test_a_change_inside_a_nested_value_is_written(pool):
    """The limiter changes its records' dicts in place (`tat[window] = ...`): still written."""
    store = PostgresLimiterStore(transactions(pool), Counter.from_dict)
    for n in range(3):
        store.transact(["k"], lambda records, n=n: records["k"].seen.append(f"call {n}"))
    assert store.read()["k"].seen == ["call 0", "call 1", "call 2"]
