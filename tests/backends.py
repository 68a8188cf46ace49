"""Which storage backend the suite runs on, and PostgreSQL databases for it.

`TEST_BACKEND=postgres` runs every store-using test on PostgreSQL: the session creates one
database (`uklaw_test_<random>`) on `TEST_POSTGRES_URL` (default: the project machines' server,
postgresql://postgres@127.0.0.1:5432/postgres) and drops it at the end; each test gets fresh
schemas in it (one per data directory or store name), dropped after the test. Unset or
`sqlite`: SQLite files in temporary directories, as always.

`python -m tests.backends` says whether PostgreSQL is reachable (exit 0) or why not (exit 1):
`make test` uses it to run or skip the PostgreSQL pass.
"""
from __future__ import annotations

import os
import secrets
import sys
from urllib.parse import quote, urlsplit, urlunsplit

BACKEND = os.environ.get("TEST_BACKEND", "sqlite").strip().lower() or "sqlite"
POSTGRES = BACKEND in ("postgres", "postgresql")
ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, ""))


def with_schema(url: str, schema: str) -> str:
    """The URL with every connection's search_path set to `schema` (libpq's `options`)."""
    parts = urlsplit(url)
    option = "options=" + quote(f"-csearch_path={schema}")
    query = f"{parts.query}&{option}" if parts.query else option
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def unreachable_reason() -> str | None:
    """None if the PostgreSQL server answers at ADMIN_URL, else why not (one line)."""
    try:
        import psycopg
    except ImportError as exc:
        return f"psycopg is not installed ({exc})"
    try:
        with psycopg.connect(ADMIN_URL, connect_timeout=3) as connection:
            connection.execute("SELECT 1")
    except psycopg.Error as exc:
        from storage.postgres import redact_url

        return f"PostgreSQL at {redact_url(ADMIN_URL)} is not reachable: {' '.join(str(exc).split())}"
    return None


class TestDatabase:
    """One database for the session, with a fresh schema per use."""

    def __init__(self) -> None:
        import psycopg

        self.name = f"uklaw_test_{secrets.token_hex(4)}"
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{self.name}"')
        self.url = with_database(ADMIN_URL, self.name)
        self.connection = psycopg.connect(self.url, autocommit=True)
        self._count = 0

    def new_schema(self) -> tuple[str, str]:
        """(schema name, a DATABASE_URL whose connections use it)."""
        self._count += 1
        schema = f"t{self._count}_{secrets.token_hex(3)}"
        self.connection.execute(f'CREATE SCHEMA "{schema}"')
        return schema, with_schema(self.url, schema)

    def drop_schema(self, schema: str) -> None:
        self.connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')

    def drop(self) -> None:
        import psycopg

        self.connection.close()
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


if __name__ == "__main__":
    reason = unreachable_reason()
    if reason:
        print(reason)
    sys.exit(1 if reason else 0)
