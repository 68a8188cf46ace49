"""A bounded number of long-lived responses (the Server-Sent Events stream).

Each open stream holds one of the server's worker threads for as long as the client stays, so
without a bound a few dashboards (or one buggy client) take every thread and the whole API stops
answering. `StreamSlots` counts the open streams; a request beyond the limit is refused at once.
"""
from __future__ import annotations

import threading
from typing import Callable


class StreamSlots:
    """At most `limit` slots held at once; thread-safe."""

    def __init__(self, limit: int):
        self.limit = limit
        self._open = 0
        self._lock = threading.Lock()

    @property
    def open(self) -> int:
        return self._open

    def acquire(self) -> Callable[[], None] | None:
        """A slot's release function (safe to call twice), or None when every slot is taken."""
        with self._lock:
            if self._open >= self.limit:
                return None
            self._open += 1
        released = threading.Event()

        def release() -> None:
            with self._lock:
                if released.is_set():
                    return
                released.set()
                self._open -= 1

        return release
