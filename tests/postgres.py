"""PostgreSQL for the tests of what several servers share: a fresh schema per test in the
session's database (`tests.backends`). These tests run in the PostgreSQL pass of `make test`
(TEST_BACKEND=postgres) and are skipped, saying so, in the SQLite pass."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from psycopg_pool import ConnectionPool

from storage.coordination import transactions
from storage.coordination_schema import install


@pytest.fixture
def postgres_url(databases: Callable[[Any], str | None], tmp_path: Path) -> str:
    """A DATABASE_URL whose connections use a new, empty schema (dropped after the test)."""
    url = databases(f"cluster:{tmp_path}")
    assert url is not None, "a postgres_only test ran without TEST_BACKEND=postgres"
    return url


@pytest.fixture
def shared_pool(postgres_url: str) -> Iterator[ConnectionPool]:
    """An autocommit pool on `postgres_url` with the shared-state tables installed."""
    with ConnectionPool(postgres_url, min_size=1, max_size=10, open=True, kwargs={"autocommit": True}) as pool:
        with transactions(pool)() as db:
            install(db)
        yield pool
