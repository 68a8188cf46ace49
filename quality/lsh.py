"""Banded LSH over MinHash signatures, for the near-duplicate index (`quality.duplicates`)."""
from __future__ import annotations

import struct
import zlib
from array import array
from collections.abc import Iterator

import numpy as np

_SLOT = struct.Struct("=q")   # a slot number in a bucket's bytes (native order, as `array("q")` reads it)


class BandIndex:
    """Banded LSH over MinHash signatures: `bands` dicts from a band's hash to the entries (slot
    numbers) sharing it.

    A bucket holds a bare slot number, or the 64-bit slot numbers in a `bytearray` once two share
    it (most buckets hold one; a templated question's buckets may hold thousands, which
    `candidate_slots` gathers at C speed). A bytearray, not an `array`: it holds no references, so
    the garbage collector does not track it, and a full collection does not visit hundreds of
    thousands of buckets (at 100,000 questions the index's arrays and entries made a full
    collection take about 0.3 s, every thread stopped). Not thread-safe: `DuplicateIndex` holds its lock.
    """

    def __init__(self, bands: int, rows: int) -> None:
        self.bands, self.rows = bands, rows
        self._tables: list[dict[int, int | bytearray]] = [{} for _ in range(bands)]

    def keys(self, values: np.ndarray) -> list[int]:
        """One 32-bit hash per band of the signature (its MinHash values)."""
        data = values.tobytes()
        width = len(data) // self.bands
        return [zlib.crc32(data[start:start + width]) for start in range(0, width * self.bands, width)]

    def insert(self, slot: int, keys: list[int]) -> None:
        """Put an entry in its buckets; the caller never inserts one twice (it removes it first)."""
        for table, key in zip(self._tables, keys):
            found = table.get(key)
            if found is None:
                table[key] = slot
            elif type(found) is bytearray:
                found += _SLOT.pack(slot)
            else:
                table[key] = bytearray(_SLOT.pack(found) + _SLOT.pack(slot))

    def remove(self, slot: int, keys: list[int]) -> None:
        for table, key in zip(self._tables, keys):
            found = table.get(key)
            if type(found) is bytearray:
                slots = memoryview(found).cast("q")
                at = slots.tolist().index(slot) * _SLOT.size
                slots.release()
                del found[at:at + _SLOT.size]
                if len(found) == _SLOT.size:
                    table[key] = _SLOT.unpack(found)[0]
            elif found == slot:
                del table[key]

    def candidate_slots(self, keys: list[int]) -> np.ndarray:
        """The slots sharing at least one bucket with these keys (a slot sharing several appears
        once per bucket)."""
        gathered = array("q")   # (copied bucket by bucket in C: one NumPy view at the end, not one per bucket)
        for table, key in zip(self._tables, keys):
            found = table.get(key)
            if found is None:
                continue
            if type(found) is bytearray:
                gathered.frombytes(found)
            else:
                gathered.append(found)  # type: ignore[arg-type]
        return np.frombuffer(gathered, dtype=np.int64) if gathered else np.empty(0, dtype=np.int64)

    def candidates(self, keys: list[int]) -> set[int]:
        """Slots sharing at least one bucket with these keys."""
        return set(self.candidate_slots(keys).tolist())

    def shared(self) -> Iterator[list[int]]:
        """Copies of the buckets holding more than one slot."""
        for table in self._tables:
            yield from (memoryview(found).cast("q").tolist() for found in table.values() if type(found) is bytearray)
