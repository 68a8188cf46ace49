"""Change events of a store: its listeners hear of every committed change (this server's writes
as they are made; in PostgreSQL mode other servers' writes through the change feed, and this
server's writes in doubt once settled). Part of `Store`."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Sequence

log = logging.getLogger("storage")


@dataclass(frozen=True)
class Change:
    kind: str                                # "add", "update", "delete"
    records: tuple[dict[str, Any], ...] = ()  # the rows as stored (add, update)
    ids: tuple[str, ...] = ()                # delete


class ChangeEvents:
    """Part of `Store` (it uses the store's `_lock`, `_listeners`, `_feed`, `_in_doubt`, `version`,
    `path`, `database`, `iter_records` and the damaged-row scan's `_damaged` and `_touched`)."""

    def on_change(self, listener: Callable[[Change], None]) -> None:
        self._listeners.append(listener)

    def _notify(self, change: Change) -> None:
        """Tell every listener about a committed change. The write has happened whatever a listener
        does: its exception is logged, never passed to the writer (who would take the write for failed)."""
        with self._lock:
            self.version += 1
            if self._damaged is not None or self._touched is not None:   # a rewritten row is a repaired one
                changed = [record["id"] for record in change.records] + list(change.ids)
                if self._touched is not None:
                    self._touched.update(changed)
                if self._damaged is not None:
                    for sample_id in changed:
                        self._damaged.pop(sample_id, None)
        for listener in list(self._listeners):
            try:
                listener(change)
            except Exception:
                log.exception("%s: a change listener failed on a committed %s; the write stands",
                              self.path, change.kind)

    def _remote_changes(self, changes: list[tuple[str, str]]) -> None:
        """Other servers' committed writes (`storage.postgres.changes`) as change events: the rows
        as they are now ("update", which listeners apply to a new id as to a known one), and the
        ids gone ("delete")."""
        latest = {sample_id: kind for kind, sample_id in changes}
        records = self._records_of([sample_id for sample_id, kind in latest.items() if kind != "delete"])
        found = {record["id"] for record in records}
        gone = [sample_id for sample_id, kind in latest.items() if kind == "delete" or sample_id not in found]
        if records:
            self._notify(Change("update", tuple(records)))
        if gone:
            self._notify(Change("delete", ids=tuple(gone)))

    def _records_of(self, ids: list[str]) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        for start in range(0, len(ids), 500):
            records += self.iter_records({"ids": ids[start:start + 500]})
        return records

    def _doubt(self, ids: Sequence[str], kind: str) -> None:
        """PostgreSQL: a write failed with the server or the network, and may have been committed
        all the same (its answer lost with the connection). The change feed skips this server's own
        writes, so it settles these ids after its polls instead (`_settle_doubts`)."""
        if self._feed is not None:
            with self._lock:
                for sample_id in ids:
                    # A later failure needs a later fence; an insert's "not found" stands only if
                    # every write in doubt was one.
                    earlier = self._in_doubt.get(sample_id)
                    self._in_doubt[sample_id] = [earlier[0] if earlier and kind == "add" else kind, None]

    def _settle_doubts(self, horizon: int) -> None:
        """After a change-feed poll whose horizon (every transaction below it has ended) is
        `horizon`: the writes in doubt whose transactions have certainly ended, as change events.

        The first poll after a failure fences its ids with a transaction id taken then: the failed
        transaction's is below it, so once a poll's horizon reaches the fence that one has committed
        or rolled back, and the row read then is final (read any sooner, a commit still on its way
        could be missed). (A snapshot's xmax cannot serve as the fence: a transaction that took its
        id after the last one to end is at or above it.) A row found is an "update" (listeners
        apply it to a new id as to a known one), an updated or deleted row gone a "delete"; an
        insert not found was never made, and nothing changed."""
        with self._lock:
            unfenced = [sample_id for sample_id, (_, fence) in self._in_doubt.items() if fence is None]
            entries = {sample_id: entry for sample_id, entry in self._in_doubt.items()
                       if entry[1] is not None and horizon >= entry[1]}
            ready = {sample_id: entry[0] for sample_id, entry in entries.items()}
        if unfenced:
            with self.database.reading() as db:
                fence = int(db.execute("SELECT pg_current_xact_id()::text").fetchone()[0])
            with self._lock:
                for sample_id in unfenced:
                    if sample_id in self._in_doubt and self._in_doubt[sample_id][1] is None:
                        self._in_doubt[sample_id][1] = fence
        if not ready:
            return
        records = self._records_of(list(ready))   # (if this fails, they are settled after a later poll)
        with self._lock:
            for sample_id, entry in entries.items():
                if self._in_doubt.get(sample_id) is entry:   # (not a write that failed since: it waits for its fence)
                    del self._in_doubt[sample_id]
        found = {record["id"] for record in records}
        made = sum(ready[sample_id] == "add" for sample_id in found)
        if made:
            log.warning("%s: %d sample(s) whose write reported a failure were stored after all", self.path, made)
        gone = [sample_id for sample_id, kind in ready.items() if sample_id not in found and kind != "add"]
        if records:
            self._notify(Change("update", tuple(records)))
        if gone:
            self._notify(Change("delete", ids=tuple(gone)))
