"""The whole dataset as a JSON array: `Store`'s reads of it (encoded rows, SQLite's compressed
blocks, PostgreSQL's `samples_json`) and the upkeep of SQLite's blocks (`storage.json_blocks`)."""
from __future__ import annotations

import itertools
from typing import Any, Callable, Iterator, Mapping, Sequence

from storage import json_blocks
from storage.fields import COLUMNS, ROW, encode_record
from storage.store_reads import page_seqs


class JsonArrays:
    """Part of `Store` (it uses the store's `database`, `dialect`, `_where`, `iter_records` and
    `to_record`)."""

    def iter_json(self, filters: Mapping[str, Any] | None = None, *, limit: int | None = None, offset: int = 0,
                  newest_first: bool = False, chunk: int = 500) -> Iterator[bytes]:
        """What `iter_records` yields, each record encoded as JSON (`encode_record`), in chunks of
        bytes: the pieces of a JSON array's body, without brackets, to be joined with commas.
        SQLite: the whole dataset in insertion order comes from the compressed blocks (decompressed,
        not re-encoded); anything else is encoded row by row. PostgreSQL: each row's JSON is kept
        beside it (`samples_json`); a row without one (changed outside the store) is encoded here."""
        if self.dialect.json_blocks:
            if not any(v not in (None, "") for v in (filters or {}).values()) and limit is None and not offset \
                    and not newest_first:
                with self.database.reading() as db:
                    yield from json_blocks.plain_pieces(db, self._encoded_range)
                return
            records = self.iter_records(filters, limit=limit, offset=offset, newest_first=newest_first)
            while pieces := [encode_record(record) for record in itertools.islice(records, chunk)]:
                yield b",".join(pieces)
            return
        where, params = self._where(filters)
        order = "DESC" if newest_first else "ASC"
        # The page's seqs first, from the key's index alone, then their JSON: an offset walks the
        # index, not the rows (at 1M rows, offset 500,000: 36-47 ms against 549-659 ms).
        sql = (f"SELECT page.seq, samples_json.body FROM ({page_seqs('samples', where, order)}) AS page "
               f"LEFT JOIN samples_json ON samples_json.seq = page.seq ORDER BY page.seq {order}")
        rows = self.database.stream(sql, [*params, self.dialect.no_limit if limit is None else limit, offset], chunk)
        while batch := list(itertools.islice(rows, chunk)):
            missing = [seq for seq, body in batch if body is None]
            encoded = self._encode(missing) if missing else {}
            yield b",".join(bytes(body) if body is not None else encoded[seq] for seq, body in batch)

    def _encode(self, seqs: Sequence[int]) -> dict[int, bytes]:
        with self.database.reading() as db:
            marks = ", ".join("?" for _ in seqs)
            rows = db.execute(f"SELECT seq, {ROW} FROM samples WHERE seq IN ({marks})", list(seqs)).fetchall()
            return {row["seq"]: encode_record(self.to_record({name: row[name] for name in COLUMNS})) for row in rows}

    def _encoded_range(self, db: Any, after: int, before: int | None, limit: int,
                       fresh: Mapping[int, tuple[str, bytes]] | None = None) -> list[tuple[int, bytes]]:
        """(seq, JSON) of up to `limit` rows with after < seq < before, in order (SQLite's blocks);
        a row in `fresh` ({seq: (updated_at, JSON)} of rows this store wrote) is taken from it instead
        of being read back while its `updated_at` is still the stored one (an edit, here or by another
        process, sets a new one)."""
        bound, params = ("", [after, limit]) if before is None else (" AND seq < ?", [after, before, limit])
        if not fresh:
            rows = db.execute(f"SELECT seq, {ROW} FROM samples WHERE seq > ?{bound} ORDER BY seq LIMIT ?", params)
            return [(row["seq"], encode_record(self.to_record(row))) for row in rows]
        found: dict[int, bytes] = {}
        seqs, older = [], []
        for seq, updated_at in db.execute(f"SELECT seq, updated_at FROM samples_light WHERE seq > ?{bound} "
                                          "ORDER BY seq LIMIT ?", params):
            seqs.append(seq)
            held = fresh.get(seq)
            if held is not None and held[0] == updated_at:
                found[seq] = held[1]
            else:
                older.append(seq)
        for start in range(0, len(older), 500):
            part = older[start:start + 500]
            rows = db.execute(f"SELECT seq, {ROW} FROM samples WHERE seq IN ({', '.join('?' for _ in part)})", part)
            found.update((row["seq"], encode_record(self.to_record(row))) for row in rows)
        return [(seq, found[seq]) for seq in seqs]

    def iter_json_zstd(self) -> Iterator[bytes]:
        """Every record, as the JSON array `iter_json` gives, compressed with zstd: SQLite's blocks
        compressed when rows were written, the rest on the way (`storage.json_blocks`). (PostgreSQL
        keeps no blocks: writers there are concurrent, and a row committed late into a sealed range
        would be missing from its block; every row is compressed on the way.)"""
        if not self.dialect.json_blocks:
            return json_blocks.stream_zstd(self.iter_json())
        return self._blocks_zstd()

    def _blocks_zstd(self) -> Iterator[bytes]:
        with self.database.reading() as db:
            yield from json_blocks.array_zstd(db, self._encoded_range)

    def seal_json(self, force: bool = False) -> int:
        """Compress the rows no block holds into blocks (`storage.json_blocks.seal`), when enough
        follow the last block or `force`; returns how many rows were sealed (0 on PostgreSQL).
        `add_many` seals as it writes; this is for rows stored before the blocks existed (the warm-up)."""
        if not self.dialect.json_blocks:
            return 0
        with self.database.reading() as db:
            if not force and json_blocks.unsealed_tail(db) < json_blocks.BLOCK_ROWS:
                return 0
        with self.database.transaction() as db:
            return json_blocks.seal(db, self._encoded_range)

    def recompress_json_block(self, level: int = json_blocks.ARCHIVE_LEVEL,
                              stop: Callable[[], bool] = lambda: False) -> tuple[int, int] | None:
        """Compress the first blocks due (`json_blocks.next_archive`: a block below `level`, or
        consecutive small blocks) again, as one block at `level` (`json_blocks.recompress`: slow,
        outside any transaction; the write that follows is short). Returns (bytes before, after; both
        0 if stopped or if a change replaced a block meanwhile), or None when no block is due
        (always on PostgreSQL, which keeps no blocks)."""
        if not self.dialect.json_blocks:
            return None
        with self.database.reading() as db:
            found = json_blocks.next_archive(db, level)
        if not found:
            return None
        smaller = json_blocks.recompress([body for _, body in found], level, stop)
        if smaller is None:
            return 0, 0
        with self.database.transaction() as db:
            if not json_blocks.replace(db, found, smaller, level):
                return 0, 0
        before = sum(len(body) for _, body in found)
        return before, min(before, len(smaller)) if len(found) == 1 else len(smaller)
