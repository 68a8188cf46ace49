"""The whole dataset's JSON array, zstd-compressed ahead of time in blocks (`samples_json_blocks`).

Compressing 800 MB of JSON when `/api/data` is asked for it takes longer than sending it; so rows
are compressed once, when written: as soon as `BLOCK_ROWS` rows follow the last block, they are
joined (`row,row,...`) and compressed into one block at `BLOCK_LEVEL`, a level too slow to run per
request but cheap per row. A read sends the blocks as they are, and the rows no block covers (the
newest, or those of a block a change dropped) compressed on the way at `STREAM_LEVEL`, each piece
its own zstd frame: consecutive frames are one valid zstd stream (RFC 8878, section 3), which
browsers and httpx decode as a whole. An uncompressed read decompresses the blocks, which is faster
than encoding their rows again. An edit or delete drops the block holding the row (triggers,
schema migration 6); `seal` rebuilds it with the next write that finds enough rows after the last
block (until then those rows are encoded and compressed on the way: correct, a little slower).

Sealing at `BLOCK_LEVEL` keeps writes fast; `ARCHIVE_LEVEL` compresses about 20% smaller but at
1-2 MB/s, too slow for a write. So blocks are compressed again later, at `ARCHIVE_LEVEL`, off the
write path (`recompress`, driven by `dataset.recompress` in idle time), consecutive ones merged into
one of up to `ARCHIVE_BLOCKS` blocks' rows (`next_archive`): a frame starts with an empty window, so
longer frames keep the window full for more of their rows. The compression runs outside any
transaction, and the new body replaces the blocks only if they are still the ones it read
(`replace`: a change meanwhile dropped or rebuilt one, so nothing stale is ever stored). Windows stay
at most 8 MB (`WINDOW_LOG`), the most a browser's zstd decoder accepts (RFC 8878, section 3.1.1.1.2).
A change drops the whole merged block holding its row; its rows are sealed again at `BLOCK_LEVEL`
(by the next write that seals) and merged again in idle time.

Why our own: neither flask-compress nor a cache can send part of a response pre-compressed; this
keeps the compressed bytes next to the rows they stand for, in the same transactions.
"""
from __future__ import annotations

import sqlite3
from typing import Callable, Iterator

try:
    from compression import zstd   # Python 3.14+
except ImportError:
    from backports import zstd

BLOCK_ROWS = 1024          # rows per block: about 8 MB of JSON at 8 KB a row
BLOCK_LEVEL = 7            # zstd level of the blocks (about 10 ms per 1,000 rows of 300 bytes, 0.2 s of 8 KB)
ARCHIVE_LEVEL = 19         # ... and their level once compressed again in the background (about 1.5 MB/s)
ARCHIVE_BLOCKS = 4         # ... merged then into blocks of up to this many blocks' rows (see `next_archive`)
WINDOW_LOG = 23            # 8 MB: browsers refuse zstd windows beyond it
RECOMPRESS_PIECE = 1 << 18  # bytes fed to the compressor at a time (a stop is noticed between pieces)
STREAM_LEVEL = 1           # ... and of the rows compressed on the way
STREAM_ROWS = 500          # rows read at a time

# (seq, JSON) of up to `limit` rows with after < seq < before (None: no bound), in order.
Rows = Callable[[sqlite3.Connection, int, "int | None", int], list[tuple[int, bytes]]]


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


def seal(db: sqlite3.Connection, rows: Rows) -> int:
    """Inside a write transaction: compress the rows between blocks into blocks, and the rows after
    the last block in blocks of `BLOCK_ROWS` (a shorter rest waits for more). Returns rows sealed."""
    sealed, block_rows, level = 0, BLOCK_ROWS, BLOCK_LEVEL
    for after, before in _gaps(db):
        while True:
            found = rows(db, after, before, block_rows)
            if not found or (before is None and len(found) < block_rows):
                break
            body = zstd.compress(b",".join(body for _, body in found), level=level)
            db.execute("INSERT INTO samples_json_blocks (first_seq, last_seq, rows, body, level) "
                       "VALUES (?, ?, ?, ?, ?)", (found[0][0], found[-1][0], len(found), body, level))
            sealed += len(found)
            after = found[-1][0]
    return sealed


def sealed_through(db: sqlite3.Connection) -> int:
    """The last seq a block holds (0: none); after `seal`, every row up to it is in a block."""
    return db.execute("SELECT coalesce(max(last_seq), 0) FROM samples_json_blocks").fetchone()[0]


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


def _joined(db: sqlite3.Connection, block: tuple[int, int, int], after: tuple[int, int, int]) -> bool:
    """Whether no row lies between two blocks (`block` then `after`, as (first_seq, last_seq, rows))."""
    return db.execute("SELECT NOT EXISTS (SELECT 1 FROM samples_light WHERE seq > ? AND seq < ?)",
                      (block[1], after[0])).fetchone()[0] == 1


def next_archive(db: sqlite3.Connection, level: int) -> list[tuple[int, bytes]]:
    """The first run of blocks to compress again as one: blocks in order, grouped while they hold at
    most `ARCHIVE_BLOCKS * BLOCK_ROWS` rows with no row between them; the first group of several
    blocks, or of one below `level`, as [(first_seq, body)]; [] when every group is one block at `level`.
    (A block's first rows are compressed with an empty window: in blocks of 4,096 rows of 8 KB, the
    8 MB window is full for three quarters of them, and the array is 4% smaller than in blocks of 1,024.)"""
    rows = ARCHIVE_BLOCKS * BLOCK_ROWS
    group: list[tuple[int, int, int, int]] = []   # (first_seq, last_seq, rows, level)

    def needs_work() -> bool:
        return len(group) > 1 or (len(group) == 1 and group[0][3] < level)

    for block in db.execute("SELECT first_seq, last_seq, rows, level FROM samples_json_blocks ORDER BY first_seq"):
        if group and (sum(b[2] for b in group) + block[2] > rows or not _joined(db, group[-1][:3], block[:3])):
            if needs_work():
                break
            group = []
        group.append(tuple(block))
    if not needs_work():
        return []
    marks = ", ".join("?" for _ in group)
    return db.execute(f"SELECT first_seq, body FROM samples_json_blocks WHERE first_seq IN ({marks}) "
                      "ORDER BY first_seq", [b[0] for b in group]).fetchall()


def recompress(bodies: list[bytes], level: int, stop: Callable[[], bool] = lambda: False) -> bytes | None:
    """Consecutive blocks' rows compressed again, as one block at `level` (one frame, window at most
    `WINDOW_LOG`), fed to the compressor in pieces; None as soon as `stop()` says so."""
    plain = b",".join(zstd.decompress(body) for body in bodies)
    compressor = zstd.ZstdCompressor(options={zstd.CompressionParameter.compression_level: level,
                                              zstd.CompressionParameter.window_log: WINDOW_LOG})
    compressor.set_pledged_input_size(len(plain))
    out = []
    for start in range(0, len(plain), RECOMPRESS_PIECE):
        if stop():
            return None
        out.append(compressor.compress(plain[start:start + RECOMPRESS_PIECE]))
    out.append(compressor.flush(zstd.ZstdCompressor.FLUSH_FRAME))
    return b"".join(out)


def replace(db: sqlite3.Connection, old: list[tuple[int, bytes]], new: bytes, level: int) -> bool:
    """Inside a write transaction: store `new` (the rows of the blocks `old`, [(first_seq, body)], at
    `level`) in their place, if every one of them is still there as read; a single block keeps the
    smaller body. Whether it did."""
    for first_seq, body in old:
        if db.execute("SELECT 1 FROM samples_json_blocks WHERE first_seq = ? AND body = ?",
                      (first_seq, body)).fetchone() is None:
            return False
    if len(old) == 1:
        body = old[0][1]
        return db.execute("UPDATE samples_json_blocks SET body = ?, level = ? WHERE first_seq = ?",
                          (new if len(new) < len(body) else body, level, old[0][0])).rowcount == 1
    first, last = old[0][0], db.execute("SELECT last_seq FROM samples_json_blocks WHERE first_seq = ?",
                                        (old[-1][0],)).fetchone()[0]
    count = db.execute(f"SELECT sum(rows) FROM samples_json_blocks WHERE first_seq IN ({', '.join('?' for _ in old)})",
                       [first_seq for first_seq, _ in old]).fetchone()[0]
    db.executemany("DELETE FROM samples_json_blocks WHERE first_seq = ?", [(first_seq,) for first_seq, _ in old])
    db.execute("INSERT INTO samples_json_blocks (first_seq, last_seq, rows, body, level) VALUES (?, ?, ?, ?, ?)",
               (first, last, count, new, level))
    return True


def _pieces(db: sqlite3.Connection, rows: Rows) -> Iterator[tuple[bytes | None, list[bytes]]]:
    """The whole array's rows in order, as (block, []) for a stored block and (None, rows' JSON) for
    the rows between blocks. The blocks cursor stays open throughout, so the whole walk sees one
    snapshot of the database."""
    blocks = db.execute("SELECT first_seq, last_seq, body FROM samples_json_blocks ORDER BY first_seq")
    after = 0

    def loose(before: int | None) -> Iterator[tuple[None, list[bytes]]]:
        nonlocal after
        while found := rows(db, after, before, STREAM_ROWS):
            yield None, [body for _, body in found]
            after = found[-1][0]

    while chunk := blocks.fetchmany(8):
        for first, last, body in chunk:
            yield from loose(first)
            yield body, []
            after = last
    yield from loose(None)


def array_zstd(db: sqlite3.Connection, rows: Rows, level: int = STREAM_LEVEL) -> Iterator[bytes]:
    """Every row as one JSON array (insertion order), as a zstd stream: the stored blocks, and the
    rows between them compressed on the way, each piece its own frame."""
    yield zstd.compress(b"[", level=level)
    empty = True
    for block, loose in _pieces(db, rows):
        lead = b"" if empty else b","
        empty = False
        if block is not None:
            if lead:
                yield zstd.compress(lead, level=level)
            yield block
        else:
            yield zstd.compress(lead + b",".join(loose), level=level)
    yield zstd.compress(b"]", level=level)


def plain_pieces(db: sqlite3.Connection, rows: Rows) -> Iterator[bytes]:
    """The same rows uncompressed, as pieces of comma-joined rows (no brackets, no comma between
    pieces): blocks decompressed, which is faster than encoding their rows again."""
    for block, loose in _pieces(db, rows):
        yield zstd.decompress(block) if block is not None else b",".join(loose)
