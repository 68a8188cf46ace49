"""The PostgreSQL backend (DATABASE_URL=postgresql://...): the same `Store` and `BatchRepository`
over a psycopg 3 connection pool instead of a SQLite file.

`PostgresDatabase(url)` (`database`) is what `Store` talks to, with the same methods as the SQLite
`storage.database.Database`: `reading()`, `transaction()`, `stream()`, `write_problem()`,
`size_bytes()`, `describe()`, `close()`, `dialect`, `schema_version`. `session` adapts a psycopg
connection to the shared SQL (placeholders, rows readable by index and by name); `schema` holds
the PostgreSQL migrations; `url` redacts passwords.
"""
from storage.postgres.database import PostgresDatabase
from storage.postgres.url import redact_url

__all__ = ["PostgresDatabase", "redact_url"]
