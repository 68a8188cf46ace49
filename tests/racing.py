"""Helpers for tests that prove a lock is needed: start many threads at the same instant, and
hand the interpreter to another thread inside a check-then-act, so code that relies on its lock
fails at once when the lock is missing instead of once in a thousand runs.

The yield (`switch`) is not a wait for anything: it only gives other threads the chance to run
between a check and the act that depends on it, which is exactly what a lock must prevent.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

THREADS = 16


def switch() -> None:
    """Let another thread run now (releases the GIL; returns at once when no one else is ready)."""
    time.sleep(0)


def race(action: Callable[[int], Any], threads: int = THREADS) -> list[Any]:
    """Run `action(i)` on `threads` threads released together by a barrier; their results, in
    thread order. Any exception in a thread is raised here."""
    barrier = threading.Barrier(threads)
    results: list[Any] = [None] * threads
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=10)
            results[index] = action(index)
        except BaseException as exc:  # re-raised in the calling thread below
            errors.append(exc)

    workers = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    assert not any(worker.is_alive() for worker in workers), "a racing thread did not finish"
    if errors:
        raise errors[0]
    return results


class YieldingSet(set):
    """A set that lets other threads run right after a membership test."""

    def __contains__(self, item: object) -> bool:
        found = super().__contains__(item)
        switch()
        return found


class YieldingDict(dict):
    """A dict that lets other threads run right after a read."""

    def get(self, key: Any, default: Any = None) -> Any:
        value = super().get(key, default)
        switch()
        return value
