"""Handing freed memory back to the operating system after a large, short-lived allocation.

An import of 100,000 lines briefly holds the text, its lines and their records; CPython frees them,
but glibc's allocator keeps the freed pages in its arenas (one per thread that allocated), so the
server's resident memory stays at its peak. `release()` collects garbage and asks glibc to return
every whole free page of every arena (`malloc_trim(0)`); elsewhere (another libc, no libc) it only
collects. Written here because no maintained package wraps this one call.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging

log = logging.getLogger("memory")


def _malloc_trim():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


_TRIM = _malloc_trim()


def release() -> bool:
    """Collect garbage, then return free pages to the system; True if the allocator was asked to."""
    gc.collect()
    if _TRIM is None:
        return False
    try:
        _TRIM(0)
    except Exception:   # never let housekeeping break the caller
        log.debug("malloc_trim failed", exc_info=True)
        return False
    return True
