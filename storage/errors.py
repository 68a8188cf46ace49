"""Errors the storage layer raises; callers see these, never a database driver's own exceptions."""
from __future__ import annotations

from pathlib import Path


class StoreError(Exception):
    """Base class of every storage error."""


class DuplicateId(StoreError):
    """An insert named a sample id that is already stored."""


class InvalidRecord(StoreError, ValueError):
    """A record breaks the stored sample's rules (`storage.records`); nothing was written.
    `problems` lists (field, what is wrong); the message joins them as "field: problem; ..."."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = list(problems)
        super().__init__("; ".join(f"{field}: {message}" for field, message in self.problems))

    @property
    def fields(self) -> list[str]:
        return list(dict.fromkeys(field for field, _ in self.problems))


class WriteFailed(StoreError):
    """A write could not be made (disk full, read-only file, failing disk, database locked too long,
    database server unreachable). Nothing was changed (except where the PostgreSQL server went away
    mid-commit: the commit may have been made; a batch counts its stored rows again when writes
    work); the same write may work later. `reason` is
    the database's, `advice` what to do, `code` SQLite's primary result code (13: full, 8:
    read-only, 10: I/O, 5: busy...; None for PostgreSQL). `path`: the file, or the database URL
    without its password."""

    verb = "write"

    def __init__(self, path: Path | str, reason: str, advice: str, code: int | None = None):
        self.where = str(path)
        self.path, self.reason, self.advice, self.code = Path(path), reason, advice, code
        super().__init__(f"cannot {self.verb} {self.where}: {reason}; {advice}")


class DatabaseUnreachable(WriteFailed):
    """PostgreSQL mode: the database server cannot be reached (down, network cut, every connection
    refused) or a connection dropped during a read or a write; nothing was changed, and the same
    request may work later. A `WriteFailed`, so every caller that waits out a failing write waits
    this out too: the web layer answers 503 with Retry-After, a batch pauses until a small write
    works again."""

    verb = "reach"


class DuplicateQuestion(StoreError):
    """An insert or edit would store a question whose normalised form (`storage.question_key`) is
    already stored: the unique constraint refused it, nothing was written. `conflicts` lists
    (id of the refused record, id of the stored sample holding that question, or None if unknown)."""

    def __init__(self, conflicts: list[tuple[str, str | None]]):
        self.conflicts = list(conflicts)
        super().__init__("; ".join(f"{sample_id}: same question as {other!r}" for sample_id, other in self.conflicts)
                         or "an exact duplicate question")

    @property
    def duplicate_of(self) -> str | None:
        return self.conflicts[0][1] if self.conflicts else None


class DatabaseDamaged(StoreError):
    """At start-up: the file is not a sound SQLite database (truncated, garbage header, failed
    integrity check). The message is one line: the file, what is wrong, what to do."""


class DatabaseUnwritable(StoreError):
    """At start-up: the database (or its directory) cannot be written (permissions, a read-only
    file system, a full disk). The message is one line: the file, what is wrong, what to do."""


class SchemaError(StoreError):
    """The database's layout is not one this server can use."""


class SchemaTooNew(SchemaError):
    """The database was migrated by a newer server than this one; refusing to touch it."""

    def __init__(self, path: Path | str, found: int, supported: int, *, setting: str = "DATA_DIR"):
        self.where = str(path)
        self.path, self.found, self.supported = Path(path), found, supported
        super().__init__(f"{self.where}: database schema version {found} is newer than this server's "
                         f"({supported}); run a newer server, or point {setting} at another database")


class DatabaseUnavailable(StoreError):
    """At start-up: the PostgreSQL database cannot be used (unreachable, wrong credentials, no such
    database, missing privileges). One line: the URL without its password, what is wrong, what to do."""


class NotLeaseHolder(StoreError):
    """PostgreSQL mode: a row of a batch whose lease another server holds now; nothing was written
    (this server lost the lease and must stop working on the batch)."""
