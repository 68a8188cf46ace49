"""Compressing `/api/data`'s stored blocks again, smaller, in idle time (`Store.recompress_json_block`).

Blocks are sealed at a fast zstd level when rows are written; the archive level saves about 20% of
the bytes on the wire but runs at 1-2 MB/s, so it runs here instead: one thread, at the lowest
scheduling priority (Linux: its own nice value), only after `idle_seconds` without a write, one block
at a time (consecutive blocks merged into one: `storage.json_blocks.next_archive`), resting after each
so that it uses at most `cpu_share` of one core. zstd releases
the GIL while it compresses, so requests are not held up. `stop()` ends it within one piece of input
(a fraction of a second); a block left half done is simply done again at the next start.

Why our own: a thread with an event is all it takes; a task queue would add a dependency for one job.
"""
from __future__ import annotations

import logging
import os
import threading
import time

from dataset import memory
from storage.store import Change, Store

log = logging.getLogger("dataset")


class Recompressor:
    def __init__(self, store: Store, *, idle_seconds: float = 2.0, cpu_share: float = 0.5,
                 level: int | None = None):
        self.store = store
        self.idle_seconds = idle_seconds
        self.cpu_share = cpu_share
        self.level = level
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._last_write = 0.0
        self._lock = threading.Lock()   # orders a write's "not idle" against a pass's "idle"
        self._life = threading.Lock()   # orders start against stop
        self._thread: threading.Thread | None = None
        self._passes = 0
        self.blocks = 0              # blocks compressed again since start
        self.saved_bytes = 0
        self.cpu_seconds = 0.0
        self.idle = threading.Event()   # set while no block is left to compress (tests and benches wait on it)

    def start(self) -> None:
        """Start the thread (once; never after `stop`). Another thread may call it (the warm-up does)."""
        with self._life:
            if self._thread is not None or self.cpu_share <= 0 or self._stop.is_set():
                return
            self.store.on_change(self._changed)
            self._wake.set()
            self._thread = threading.Thread(target=self._run, name="recompress", daemon=True)
            self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        with self._life:   # a start under way finishes first: its thread is joined, not left unstarted
            self._stop.set()
            self._wake.set()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _changed(self, change: Change) -> None:
        with self._lock:
            self._last_write = time.monotonic()
            self.idle.clear()
            self._wake.set()

    def _run(self) -> None:
        try:   # Linux: a thread's own nice value (other systems: the process's; skip there)
            if hasattr(os, "setpriority") and os.uname().sysname == "Linux":
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except OSError:
            pass
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            try:
                self._pass()
            except Exception:
                log.exception("recompress: failed; /api/data keeps the blocks as they are")
                self._stop.wait(60)

    def _pass(self) -> None:
        """Compress blocks until none is left below the level (or a stop)."""
        started, blocks, cpu, saved = time.monotonic(), self.blocks, self.cpu_seconds, self.saved_bytes
        while not self._stop.is_set():
            quiet = self.idle_seconds - (time.monotonic() - self._last_write)
            if quiet > 0:
                self._stop.wait(quiet)
                continue
            began, cpu_began = time.monotonic(), time.thread_time()
            kwargs = {} if self.level is None else {"level": self.level}
            result = self.store.recompress_json_block(stop=self._stop.is_set, **kwargs)
            self.cpu_seconds += time.thread_time() - cpu_began
            if result is None:
                break
            if result != (0, 0):
                self.blocks += 1
                self.saved_bytes += result[0] - result[1]
            self._stop.wait((time.monotonic() - began) * (1 / self.cpu_share - 1))
        else:
            return
        self._passes += 1
        if self.blocks > blocks:   # the compressors' tables (tens of MB at level 19) go back to the system
            memory.release()
        if self.blocks > blocks or self._passes == 1:   # the first pass always says it is done
            log.info("recompress: %d blocks compressed again in %.1f s (CPU %.1f s), %.1f MB smaller",
                     self.blocks - blocks, time.monotonic() - started, self.cpu_seconds - cpu,
                     (self.saved_bytes - saved) / 1e6)
        with self._lock:
            if not self._wake.is_set():   # no write since this pass found nothing left
                self.idle.set()
