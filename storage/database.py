"""The SQLite file behind the store: per-thread connections, write transactions, the schema on open.

WAL mode; every write is one `BEGIN IMMEDIATE` transaction, so concurrent writers queue instead of
losing each other's updates. Opening a `Database` brings its schema up to date (`storage.schema`).
Only storage modules use this class; callers work with `Store` and `BatchRepository`.

A thread's connection is closed when the thread ends (its thread-local handle is released and a
finalizer closes the connection), so short-lived threads (batch workers) leave no descriptors behind.

A write that fails for a reason outside the program (disk full, read-only file, failing disk, lock
held too long) raises `WriteFailed` naming the file, SQLite's reason and what to do; other errors
(a constraint, a bug) pass through unchanged. `write_problem()` is the real check: a small write in
a short transaction, which also reports a real write that failed in the last 30 s with none
succeeding since (a disk with a free page can take the check's write and still refuse a sample's).
`limit_pages()` caps the file's growth with SQLite's own `max_page_count`, so
tests and drills meet a genuine "database or disk is full".
"""
from __future__ import annotations

import itertools
import logging
import sqlite3
import threading
import time
import weakref
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Sequence

from storage.dialect import Dialect
from storage.errors import DatabaseDamaged, DatabaseUnwritable, WriteFailed
from storage.schema import migrate

log = logging.getLogger("storage")

BUSY_TIMEOUT = 30.0          # seconds a write waits for another writer's lock
PROBE_BUSY_TIMEOUT = 1.0     # ... and the write check, which must answer quickly
FAILURE_MEMORY_SECONDS = 30.0   # a real write that failed is reported this long unless one succeeds since

# SQLite's primary result codes for failures outside the program, and what to do about each.
SQLITE_PERM, SQLITE_BUSY, SQLITE_LOCKED, SQLITE_READONLY, SQLITE_IOERR = 3, 5, 6, 8, 10
SQLITE_CORRUPT, SQLITE_FULL, SQLITE_CANTOPEN, SQLITE_NOTADB = 11, 13, 14, 26
FIX_PERMISSIONS = "fix permissions: the server's user must be able to write the file and its directory"
ADVICE = {
    SQLITE_FULL: "free space on its disk",
    SQLITE_IOERR: "check the disk and free space on it",
    SQLITE_READONLY: FIX_PERMISSIONS,
    SQLITE_PERM: FIX_PERMISSIONS,
    SQLITE_CANTOPEN: FIX_PERMISSIONS,
    SQLITE_BUSY: "another process or a long write holds the database; it is retried",
    SQLITE_LOCKED: "another process or a long write holds the database; it is retried",
    SQLITE_CORRUPT: "the file is damaged: restore it from a backup",
    SQLITE_NOTADB: "the file is damaged: restore it from a backup",
}
_MESSAGES = (("disk is full", SQLITE_FULL), ("disk i/o error", SQLITE_IOERR), ("readonly", SQLITE_READONLY),
             ("unable to open", SQLITE_CANTOPEN), ("locked", SQLITE_BUSY), ("malformed", SQLITE_CORRUPT),
             ("not a database", SQLITE_NOTADB))


def result_code(exc: sqlite3.Error) -> int | None:
    """SQLite's primary result code for an error (from the message if the driver gave none)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF
    text = str(exc).lower()
    return next((found for fragment, found in _MESSAGES if fragment in text), None)


def write_failure(path: Path, exc: BaseException) -> BaseException:
    """`WriteFailed` for a failure outside the program, else the exception itself."""
    if isinstance(exc, sqlite3.Error) and not isinstance(exc, sqlite3.IntegrityError):
        code = result_code(exc)
        advice = ADVICE.get(code or -1)
        if advice is not None:
            return WriteFailed(path, str(exc), advice, code)
    return exc


def damaged(path: Path, what: str) -> DatabaseDamaged:
    return DatabaseDamaged(f"{path}: {what}; restore it from a backup, or inspect it with: "
                           f"sqlite3 {path} 'PRAGMA integrity_check'")


def unwritable(path: Path, what: str, code: int | None) -> DatabaseUnwritable:
    where = path.parent
    if code == SQLITE_FULL:
        advice = f"free space on the disk holding {where}"
    elif code == SQLITE_IOERR:
        advice = f"check the disk holding {where} and free space on it"
    else:
        advice = (f"fix permissions (or remount read-write): the server's user must be able to write {path} "
                  f"and its directory {where} (SQLite keeps {path.name}-wal and {path.name}-shm there)")
    return DatabaseUnwritable(f"{path}: {what}; {advice}")


def startup_failure(path: Path, exc: sqlite3.Error) -> BaseException:
    """The one-line start-up error for a database that cannot be opened, read or migrated."""
    code = result_code(exc)
    if code == SQLITE_CORRUPT:
        return damaged(path, f"the database file is damaged, perhaps truncated ({exc})")
    if code == SQLITE_NOTADB:
        return damaged(path, f"not a SQLite database, or its header is damaged ({exc})")
    if code in (SQLITE_READONLY, SQLITE_PERM, SQLITE_CANTOPEN, SQLITE_FULL, SQLITE_IOERR):
        return unwritable(path, f"cannot open or write the database ({exc})", code)
    return exc


class _Handle:
    """A thread's connection, held in thread-local storage: when the thread ends, the handle goes
    and its finalizer closes the connection. `page_limit`: the max_page_count set on it."""

    __slots__ = ("db", "page_limit", "__weakref__")

    def __init__(self, db: sqlite3.Connection, page_limit: int):
        self.db = db
        self.page_limit = page_limit


def _close_connection(connections: dict[int, tuple[threading.Thread, sqlite3.Connection]],
                      lock: threading.RLock, key: int) -> None:
    with lock:
        entry = connections.pop(key, None)
    if entry is not None:
        try:
            entry[1].close()
        except sqlite3.Error:
            pass


class Database:
    """One SQLite file. Each thread gets its own connection, closed when the thread ends.

    The storage interface both backends share (`storage.postgres.PostgresDatabase` is the other):
    `reading()`, `transaction()`, `stream()`, `write_problem()`, `writable()`, `size_bytes()`,
    `describe()`, `close()`, `dialect`, `IntegrityError`, `schema_version`, `path`/`where`."""

    IntegrityError = sqlite3.IntegrityError
    dialect: Dialect   # set by storage.store (its damaged-row condition lives there)

    def __init__(self, path: Path | str):
        """Open the file, check it (`PRAGMA quick_check`), bring its schema up to date and try a
        small write. A damaged file raises `DatabaseDamaged`, one that cannot be written
        `DatabaseUnwritable`; a full disk or a busy lock is only logged (reads still work, writes
        wait for space: see `write_problem`)."""
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise unwritable(self.path, f"cannot create its directory ({exc.strerror})", None) from None
        self._local = threading.local()
        self._connections: dict[int, tuple[threading.Thread, sqlite3.Connection]] = {}
        self._finalizers: dict[int, weakref.finalize] = {}
        self._keys = itertools.count()
        self._lock = threading.RLock()
        self._page_limit: int | None = None      # limit_pages(); None: SQLite's own maximum
        self._default_page_limit: int | None = None
        self._failed_write: tuple[float, str] | None = None   # (monotonic time, message) of the last real one
        try:
            self.schema_version = self._open()
        except BaseException:
            self.close()
            raise

    def _open(self) -> int:
        try:
            db = self.connection()
            problems = [row[0] for row in db.execute("PRAGMA quick_check(3)")]
            if problems != ["ok"]:
                lines = [line for problem in problems for line in problem.splitlines() if not line.startswith("***")]
                detail = "; ".join(lines)
                raise damaged(self.path, "the integrity check (PRAGMA quick_check) failed: "
                                         f"{detail[:200] + ' ...' if len(detail) > 200 else detail}")
            version = migrate(db, self.path)
        except sqlite3.Error as exc:
            failure = startup_failure(self.path, exc)
            if failure is exc:
                raise
            raise failure from None
        try:
            self._try_write(PROBE_BUSY_TIMEOUT)
        except WriteFailed as exc:
            if exc.code in (SQLITE_READONLY, SQLITE_PERM, SQLITE_CANTOPEN):
                raise unwritable(self.path, f"the database is read-only ({exc.reason})", exc.code) from None
            if exc.code in (SQLITE_CORRUPT, SQLITE_NOTADB):
                raise damaged(self.path, f"the database file is damaged ({exc.reason})") from None
            log.warning("%s; serving reads, writes wait until they work again", exc)
        return version

    @property
    def where(self) -> str:
        return str(self.path)

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection, for reads (the shared interface; SQLite needs no pool)."""
        yield self.connection()

    def stream(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None,
               chunk: int = 1000) -> Iterator[sqlite3.Row]:
        """Rows of a query, fetched `chunk` at a time."""
        cursor = self.connection().execute(sql, params or ())
        while rows := cursor.fetchmany(chunk):
            yield from rows

    def describe(self) -> dict[str, Any]:
        """What /api/health reports about the database."""
        return {"backend": "sqlite", "path": str(self.path), "schema_version": self.schema_version}

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (autocommit outside `transaction()`), opened on first use."""
        return self._handle().db

    def _handle(self) -> _Handle:
        handle = getattr(self._local, "handle", None)
        if handle is None:
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
            try:
                db.row_factory = sqlite3.Row
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")   # durable across a process crash in WAL mode
                db.execute("PRAGMA foreign_keys=ON")
                page_limit = db.execute("PRAGMA max_page_count").fetchone()[0]
            except BaseException:
                db.close()
                raise
            if self._default_page_limit is None:
                self._default_page_limit = page_limit
            handle = _Handle(db, page_limit)
            key = next(self._keys)
            with self._lock:
                self._connections[key] = (threading.current_thread(), db)
                finalizer = weakref.finalize(handle, _close_connection, self._connections, self._lock, key)
                finalizer.atexit = False   # at exit a daemon thread may still be using it
                self._finalizers[key] = finalizer
            self._local.handle = handle
        return handle

    @contextmanager
    def transaction(self, *, probe: bool = False) -> Iterator[sqlite3.Connection]:
        """A write transaction: taken at once (BEGIN IMMEDIATE), committed or rolled back whole.
        If anything fails, COMMIT included, the transaction is rolled back (unless SQLite already
        did), so the connection is ready for the next one. A failure outside the program raises
        `WriteFailed`; unless `probe` (the write check's own), its outcome is what `write_problem`
        remembers."""
        handle = self._handle()
        db = handle.db
        try:
            db.execute("BEGIN IMMEDIATE")
            self._apply_page_limit(handle)
            yield db
            db.execute("COMMIT")
        except BaseException as exc:
            if db.in_transaction:
                try:
                    db.execute("ROLLBACK")
                except sqlite3.Error as rollback:   # keep the original error; say why the rollback failed
                    log.warning("%s: rollback failed: %s", self.path, rollback)
            failure = write_failure(self.path, exc)
            if failure is exc:
                raise
            if not probe:
                self._failed_write = (time.monotonic(), str(failure))
            raise failure from exc
        if not probe:
            self._failed_write = None

    def _apply_page_limit(self, handle: _Handle) -> None:
        wanted = self._page_limit if self._page_limit is not None else self._default_page_limit
        if wanted is not None and handle.page_limit != wanted:
            handle.db.execute(f"PRAGMA max_page_count = {int(wanted)}")
            handle.page_limit = wanted

    def limit_pages(self, pages: int | None) -> None:
        """Cap the file at `pages` pages on every connection (SQLite's `max_page_count`, never below
        the file's size at the next write, so 1 means "no growth"), or lift the cap (None). A write
        that needs a new page then fails with SQLite's own "database or disk is full". For tests
        and drills of a full disk."""
        self._page_limit = pages

    def write_problem(self, busy_timeout: float = PROBE_BUSY_TIMEOUT) -> str | None:
        """Try a small real write: None if it worked, else what is wrong (one line). In one short
        transaction that waits at most `busy_timeout` seconds for the write lock: a page-sized row
        inserted and rolled back to a savepoint (can the file grow?), then one small row rewritten
        and committed (does a commit reach the disk?). A real write that failed in the last
        `FAILURE_MEMORY_SECONDS`, none succeeding since, is the problem even if the check's works."""
        try:
            self._try_write(busy_timeout)
        except WriteFailed as exc:
            return str(exc)
        except sqlite3.Error as exc:
            return f"cannot write {self.path}: {exc}"
        failed = self._failed_write
        if failed is not None and time.monotonic() - failed[0] < FAILURE_MEMORY_SECONDS:
            return failed[1]
        return None

    def _try_write(self, busy_timeout: float) -> None:
        """The small write of `write_problem`; raises `WriteFailed` if it fails."""
        db = self.connection()
        db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        try:
            with self.transaction(probe=True) as tx:
                now = datetime.now(timezone.utc).isoformat()
                page_size = tx.execute("PRAGMA page_size").fetchone()[0]
                tx.execute("SAVEPOINT grow")
                tx.execute("INSERT INTO storage_probe (id, at, filler) VALUES (2, ?, zeroblob(?))", (now, page_size))
                tx.execute("ROLLBACK TO grow")
                tx.execute("RELEASE grow")
                tx.execute("INSERT INTO storage_probe (id, at) VALUES (1, ?) "
                           "ON CONFLICT(id) DO UPDATE SET at = excluded.at", (now,))
        finally:
            db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")

    def writable(self) -> bool:
        """Whether a small write works now (`write_problem()` found nothing)."""
        return self.write_problem() is None

    def close(self) -> None:
        """Close this thread's connection and any left by finished threads. A connection another
        thread may still be using is left to that thread (closing it under a running query would
        crash the interpreter); it closes when the thread ends."""
        current = threading.current_thread()
        with self._lock:
            done = [key for key, (thread, _) in self._connections.items()
                    if thread is current or not thread.is_alive()]
            finalizers = [self._finalizers.pop(key) for key in done if key in self._finalizers]
            for key in list(self._finalizers):
                if key not in self._connections:   # closed when its thread ended
                    del self._finalizers[key]
        for finalizer in finalizers:
            finalizer()
        self._local.__dict__.pop("handle", None)

    def size_bytes(self) -> int:
        """The file's size on disk, with its write-ahead log."""
        total = 0
        for suffix in ("", "-wal"):
            candidate = Path(str(self.path) + suffix)
            if candidate.exists():
                total += candidate.stat().st_size
        return total
