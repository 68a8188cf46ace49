"""The SQLite file behind the store: per-thread connections, write transactions, the schema on open.

WAL mode; every write is one `BEGIN IMMEDIATE` transaction, so concurrent writers queue instead of
losing each other's updates. Opening a `Database` brings its schema up to date (`storage.schema`).
Only storage modules use this class; callers work with `Store` and `BatchRepository`.

A thread's connection is closed when the thread ends (its thread-local handle is released and a
finalizer closes the connection), so short-lived threads (batch workers) leave no descriptors behind.
"""
from __future__ import annotations

import itertools
import logging
import sqlite3
import threading
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from storage.schema import migrate

log = logging.getLogger("storage")


class _Handle:
    """A thread's connection, held in thread-local storage: when the thread ends, the handle goes
    and its finalizer closes the connection."""

    __slots__ = ("db", "__weakref__")

    def __init__(self, db: sqlite3.Connection):
        self.db = db


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
    """One SQLite file. Each thread gets its own connection, closed when the thread ends."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._connections: dict[int, tuple[threading.Thread, sqlite3.Connection]] = {}
        self._finalizers: dict[int, weakref.finalize] = {}
        self._keys = itertools.count()
        self._lock = threading.RLock()
        try:
            self.schema_version = migrate(self.connection(), self.path)
        except BaseException:
            self.close()
            raise

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (autocommit outside `transaction()`), opened on first use."""
        handle = getattr(self._local, "handle", None)
        if handle is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            try:
                db.row_factory = sqlite3.Row
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")   # durable across a process crash in WAL mode
                db.execute("PRAGMA foreign_keys=ON")
            except BaseException:
                db.close()
                raise
            handle = _Handle(db)
            key = next(self._keys)
            with self._lock:
                self._connections[key] = (threading.current_thread(), db)
                finalizer = weakref.finalize(handle, _close_connection, self._connections, self._lock, key)
                finalizer.atexit = False   # at exit a daemon thread may still be using it
                self._finalizers[key] = finalizer
            self._local.handle = handle
        return handle.db

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: taken at once (BEGIN IMMEDIATE), committed or rolled back whole.
        If anything fails, COMMIT included, the transaction is rolled back (unless SQLite already
        did), so the connection is ready for the next one."""
        db = self.connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                try:
                    db.execute("ROLLBACK")
                except sqlite3.Error as exc:   # keep the original error; say why the rollback failed
                    log.warning("%s: rollback failed: %s", self.path, exc)
            raise

    def writable(self) -> bool:
        """Whether a write could start now (takes the write lock and releases it; changes nothing)."""
        db = self.connection()
        try:
            db.execute("BEGIN IMMEDIATE")
            db.execute("ROLLBACK")
            return True
        except sqlite3.Error:
            return False

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
