"""The rate limiter's records in PostgreSQL, so several servers spend one provider budget.

`PostgresLimiterStore` implements the limiter's store interface (`fallback.limiter_state`):
`transact(keys, fn)` runs `fn` on the records of `keys` in ONE short transaction: the rows are
created if missing, locked in key order (`SELECT ... ORDER BY key FOR UPDATE`: two servers
reserving on the same model queue for a moment, never both read the old value), handed to `fn`,
and those `fn` changed are written back before the commit. Never a read-then-write across
transactions. Records are the limiter's own small objects; this module only needs how to build one
from a dict (`decode`) and each record's `to_dict()`, stored as jsonb in `limiter_state`.
"""
from __future__ import annotations

import json
import threading
from typing import Any, Callable, Generic, Protocol, Sequence, TypeVar

from psycopg.types.json import Jsonb

from storage.coordination import Connect, once_more

T = TypeVar("T")


class Record(Protocol):
    def to_dict(self) -> dict[str, Any]: ...


R = TypeVar("R", bound=Record)


class PostgresLimiterStore(Generic[R]):
    def __init__(self, connect: Connect, decode: Callable[[dict[str, Any]], R]):
        self.connect = connect
        self.decode = decode
        self._known: set[str] = set()     # keys whose row exists: no insert needed
        self._known_lock = threading.Lock()

    def transact(self, keys: Sequence[str], fn: Callable[[dict[str, R]], T]) -> T:
        return once_more(lambda: self._transact(keys, fn))

    def _transact(self, keys: Sequence[str], fn: Callable[[dict[str, R]], T]) -> T:
        ordered = sorted(set(keys))
        with self._known_lock:
            missing = [key for key in ordered if key not in self._known]
        with self.connect() as db:
            if missing:
                db.execute("INSERT INTO limiter_state (key, state) SELECT k, '{}'::jsonb FROM unnest(%s::text[]) AS k "
                           "ORDER BY k ON CONFLICT (key) DO NOTHING", (missing,))
            rows = db.execute("SELECT key, state::text FROM limiter_state WHERE key = ANY(%s) ORDER BY key FOR UPDATE",
                              (ordered,)).fetchall()
            # parsed twice rather than deep-copied (`decode` may keep, and `fn` change, its parts): C-speed
            before = {key: json.loads(text) for key, text in rows}
            records = {key: self.decode(json.loads(text)) for key, text in rows}
            result = fn(records)
            changed = [(key, record.to_dict()) for key, record in records.items()]
            changed = [(key, data) for key, data in changed if data != before.get(key)]
            if changed:
                db.execute("UPDATE limiter_state AS s SET state = v.state FROM "
                           "(SELECT unnest(%s::text[]) AS key, unnest(%s::jsonb[]) AS state) AS v WHERE s.key = v.key",
                           ([key for key, _ in changed], [Jsonb(data) for _, data in changed]))
        if missing:
            with self._known_lock:
                self._known.update(missing)
        return result

    def read(self) -> dict[str, R]:
        return once_more(self._read)

    def _read(self) -> dict[str, R]:
        with self.connect() as db:
            rows = db.execute("SELECT key, state FROM limiter_state ORDER BY key").fetchall()
        return {key: self.decode(state) for key, state in rows}
