"""A throw-away PostgreSQL database per test, for the tests of what several servers share.

PostgreSQL is expected at 127.0.0.1:5432 with trust authentication (override with
`TEST_POSTGRES_URL`, a URL of the maintenance database). When it cannot be reached, the tests
that need it are skipped with the reason; `.ci/run` refuses to skip them.
"""
from __future__ import annotations

import os
import uuid
from typing import Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def unreachable() -> str | None:
    """Why PostgreSQL cannot be used for tests, or None when it can."""
    try:
        with psycopg.connect(ADMIN_URL, connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return f"PostgreSQL is not reachable at {ADMIN_URL} ({str(exc).strip().splitlines()[0]})"


def url_of(database: str) -> str:
    params = conninfo_to_dict(ADMIN_URL)
    params["dbname"] = database
    host, port, user = params.get("host", "127.0.0.1"), params.get("port", 5432), params.get("user", "postgres")
    return f"postgresql://{user}@{host}:{port}/{database}"


def make_database() -> str:
    name = f"uklaw_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name


def drop_database(name: str) -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """The URL of a new, empty database, dropped after the test."""
    reason = unreachable()
    if reason:
        pytest.skip(reason)
    name = make_database()
    try:
        yield url_of(name)
    finally:
        drop_database(name)


__all__ = ["postgres_url", "unreachable", "make_database", "drop_database", "url_of", "make_conninfo"]
