"""The whole dataset's JSON array, zstd-compressed ahead of time in blocks (`samples_json_blocks`).

Compressing 800 MB of JSON when `/api/data` is asked for it takes longer than sending it; so rows
are compressed once, when written: as soon as `BLOCK_ROWS` rows follow the last block, they are
joined (`row,row,...`) and compressed into one block at `BLOCK_LEVEL`, a level too slow to run per
request but cheap per row. A read sends the blocks as they are, and the rows no block covers (the
newest, or those of a block a change dropped) compressed on the way at `STREAM_LEVEL`, each piece
its own zstd frame: consecutive frames are one valid zstd stream (RFC 8878, section 3), which
browsers and httpx decode as a whole. An edit or delete drops the block holding the row (triggers,
schema migration 6); `seal` rebuilds it with the next write.

Why our own: neither flask-compress nor a cache can send part of a response pre-compressed; this
keeps the compressed bytes next to the rows they stand for, in the same transactions.
"""
from __future__ import annotations

import sqlite3
from typing import Callable, Iterator, Sequence

try:
    from compression import zstd   # Python 3.14+
except ImportError:
    from backports import zstd

BLOCK_ROWS = 1024          # rows per block: about 8 MB of JSON at 8 KB a row
BLOCK_LEVEL = 7            # zstd level of the blocks (about 10 ms per 1,000 rows of 300 bytes, 0.2 s of 8 KB)
STREAM_LEVEL = 1           # ... and of the rows compressed on the way
STREAM_ROWS = 500          # rows read at a time

Encoder = Callable[[sqlite3.Connection, Sequence[int]], dict[int, bytes]]   # JSON of rows that lack it


def _rows(db: sqlite3.Connection, after: int, before: int | None, limit: int, encode: Encoder) -> list[tuple[int, bytes]]:
    """(seq, JSON) of up to `limit` rows with after < seq < before, in order."""
    bound = "" if before is None else " AND samples_light.seq < ?"
    params = [after] + ([] if before is None else [before]) + [limit]
    rows = db.execute("SELECT samples_light.seq, samples_json.body FROM samples_light LEFT JOIN samples_json "
                      f"ON samples_json.seq = samples_light.seq WHERE samples_light.seq > ?{bound} "
                      "ORDER BY samples_light.seq LIMIT ?", params).fetchall()
    missing = [seq for seq, body in rows if body is None]
    encoded = encode(db, missing) if missing else {}
    return [(seq, body if body is not None else encoded[seq]) for seq, body in rows]


def _gaps(db: sqlite3.Connection) -> list[tuple[int, int | None]]:
    """The seq ranges (after, before) between blocks and after the last one (before = None)."""
    blocks = db.execute("SELECT first_seq, last_seq FROM samples_json_blocks ORDER BY first_seq").fetchall()
    gaps, after = [], 0
    for first, last in blocks:
        if first > after + 1:
            gaps.append((after, first))
        after = last
    gaps.append((after, None))
    return gaps


def seal(db: sqlite3.Connection, encode: Encoder) -> int:
    """Inside a write transaction: compress the rows between blocks into blocks, and the rows after
    the last block in blocks of `BLOCK_ROWS` (a shorter rest waits for more). Returns rows sealed."""
    sealed, block_rows, level = 0, BLOCK_ROWS, BLOCK_LEVEL
    for after, before in _gaps(db):
        while True:
            rows = _rows(db, after, before, block_rows, encode)
            if not rows or (before is None and len(rows) < block_rows):
                break
            body = zstd.compress(b",".join(body for _, body in rows), level=level)
            db.execute("INSERT INTO samples_json_blocks (first_seq, last_seq, rows, body) VALUES (?, ?, ?, ?)",
                       (rows[0][0], rows[-1][0], len(rows), body))
            sealed += len(rows)
            after = rows[-1][0]
    return sealed


def unsealed_tail(db: sqlite3.Connection) -> int:
    """How many rows follow the last block (a cheap check before `seal`)."""
    last = db.execute("SELECT coalesce(max(last_seq), 0) FROM samples_json_blocks").fetchone()[0]
    return db.execute("SELECT COUNT(*) FROM samples_light WHERE seq > ?", (last,)).fetchone()[0]


def _frames(rows: Iterator[bytes], lead: bytes, level: int) -> Iterator[bytes]:
    compressor = zstd.ZstdCompressor(level=level)
    out = compressor.compress(lead)
    for body in rows:
        out += compressor.compress(body)
        if len(out) >= 1 << 16:
            yield out
            out = b""
    yield out + compressor.flush()


def stream_zstd(bodies: Iterator[bytes], level: int = STREAM_LEVEL) -> Iterator[bytes]:
    """Rows' JSON as one JSON array, compressed on the way (no stored blocks)."""
    first = True

    def joined() -> Iterator[bytes]:
        nonlocal first
        for body in bodies:
            yield body if first else b"," + body
            first = False
    yield from _frames(joined(), b"[", level)
    yield zstd.compress(b"]", level=level)


def array_zstd(db: sqlite3.Connection, encode: Encoder, level: int = STREAM_LEVEL) -> Iterator[bytes]:
    """Every row as one JSON array (what `Store.iter_json` gives, in insertion order), as a zstd
    stream: the stored blocks, and the rows between them compressed on the way. The blocks cursor
    stays open throughout, so the whole read sees one snapshot of the database."""
    blocks = db.execute("SELECT first_seq, last_seq, body FROM samples_json_blocks ORDER BY first_seq")
    empty = True

    def loose(after: int, before: int | None) -> Iterator[bytes]:
        """The rows between two blocks, compressed now, each preceded by a comma but the first of all."""
        nonlocal empty
        while rows := _rows(db, after, before, STREAM_ROWS, encode):
            lead = b"" if empty else b","
            empty = False
            yield from _frames((b"," + body for _, body in rows[1:]), lead + rows[0][1], level)
            after = rows[-1][0]

    yield zstd.compress(b"[", level=level)
    after = 0
    while chunk := blocks.fetchmany(8):
        for first, last, body in chunk:
            yield from loose(after, first)
            if not empty:
                yield zstd.compress(b",", level=level)
            empty = False
            yield body
            after = last
    yield from loose(after, None)
    yield zstd.compress(b"]", level=level)
