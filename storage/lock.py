"""One server per data directory: an exclusive, advisory lock on `DATA_DIR/server.lock`.

The operating system releases the lock when the holder exits, however it exits (SIGKILL included),
so a stale file never blocks a restart. The file records the holder's process id and address so
the refusal can name them.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
from pathlib import Path
from typing import IO, Any

from storage.errors import DatabaseUnwritable, StoreError

log = logging.getLogger("storage")


class DataDirLocked(StoreError):
    """Another live process serves this data directory."""


FIX_DIRECTORY = ("fix permissions (or remount read-write): the server's user must be able to create and write "
                 "files in the data directory")


class DataDirLock:
    FILE = "server.lock"

    def __init__(self, data_dir: Path):
        self.path = Path(data_dir) / self.FILE
        self._file: IO[str] | None = None

    def acquire(self, **about: Any) -> "DataDirLock":
        """Take the lock or raise `DataDirLocked` naming the directory and the other process."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(self.path, "a+", encoding="utf-8")
        except OSError as exc:
            raise DatabaseUnwritable(f"{self.path.parent}: cannot create {self.FILE} ({exc.strerror}); "
                                     f"{FIX_DIRECTORY}") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = _describe(handle.read())
            handle.close()
            raise DataDirLocked(f"{self.path.parent}: another server ({holder}) is using this data directory; "
                                f"stop it or set DATA_DIR to another directory") from None
        try:   # who holds it, for a refusal to name; written unbuffered, so a full disk loses only that
            os.ftruncate(handle.fileno(), 0)
            os.write(handle.fileno(), json.dumps({"pid": os.getpid(), **about}).encode())
        except OSError as exc:
            log.warning("%s: could not record this process in it (%s); the lock is held all the same",
                        self.path, exc.strerror)
        self._file = handle
        return self

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self) -> "DataDirLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _describe(text: str) -> str:
    try:
        info = json.loads(text)
    except ValueError:
        return "process unknown"
    parts = [f"pid {info.get('pid', '?')}"]
    if info.get("address"):
        parts.append(f"serving {info['address']}")
    return ", ".join(parts)
