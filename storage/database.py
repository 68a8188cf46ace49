"""The SQLite file behind the store: per-thread connections, write transactions, the schema on open.

WAL mode; every write is one `BEGIN IMMEDIATE` transaction, so concurrent writers queue instead of
losing each other's updates. Opening a `Database` brings its schema up to date (`storage.schema`).
Only storage modules use this class; callers work with `Store` and `BatchRepository`.
"""
from __future__ import annotations

import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from storage.schema import migrate


class Database:
    """One SQLite file. Each thread gets its own connection."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._connections: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._lock = threading.Lock()
        try:
            self.schema_version = migrate(self.connection(), self.path)
        except BaseException:
            self.close()
            raise

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (autocommit outside `transaction()`), opened on first use."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")   # durable across a process crash in WAL mode
            db.execute("PRAGMA foreign_keys=ON")
            self._local.db = db
            with self._lock:
                self._connections.append((threading.current_thread(), db))
        return db

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: taken at once (BEGIN IMMEDIATE), committed or rolled back whole."""
        db = self.connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

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
        """Close this thread's connection and those of finished threads. A connection another
        thread may still be using is left to that thread (closing it under a running query would
        crash the interpreter); it closes when the thread ends."""
        current = threading.current_thread()
        with self._lock:
            keep = []
            for thread, db in self._connections:
                if thread is current or not thread.is_alive():
                    try:
                        db.close()
                    except sqlite3.Error:
                        pass
                else:
                    keep.append((thread, db))
            self._connections = keep
        self._local = threading.local()

    def size_bytes(self) -> int:
        """The file's size on disk, with its write-ahead log."""
        total = 0
        for suffix in ("", "-wal"):
            candidate = Path(str(self.path) + suffix)
            if candidate.exists():
                total += candidate.stat().st_size
        return total
