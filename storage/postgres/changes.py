"""What other servers changed in the samples, so this server's statistics frame and duplicate
index follow them (PostgreSQL mode: several servers, one dataset).

A trigger (`schema`, migration 2) logs each insert, update and delete of a sample in
`sample_changes` with the writer's origin (every store's pool sets `uklaw.origin` to the store's
own id on its connections) and its transaction id. `ChangeFeed` polls every `interval` seconds
for the rows of other origins whose transactions have all ended: those below the oldest xid a
fresh snapshot finds running in this database (`coordination.COMMITTED_HORIZON`: a long write in
another database of the server does not hold it back). A transaction still running at that
moment has an xid at or above that horizon, so no row can later appear below it: nothing is
skipped, whatever order transactions commit in. The
store turns the ids into `Change` events for its listeners (re-reading the rows: an update is
the row as it is now). Rows older than `RETENTION_MINUTES` are pruned; a server that has not
polled for that long has been stopped, and reloads everything when it starts. Rows the statistics
snapshot still needs are kept (`stats_snapshot`), and the prune step asks for a fresh snapshot
when they grow many.

While the database is away, polls fail quietly (one log line per outage, `storage.outage`) and
the horizon stays where it was: the first poll that works delivers everything missed, since the
horizon moves only once a poll's changes have been delivered.

Written here, not taken from LISTEN/NOTIFY: notifications are lost while a server is
disconnected and carry no order guarantee across transactions; the logged rows are neither.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from storage.coordination import COMMITTED_HORIZON
from storage.outage import Outage
from storage.postgres import stats_snapshot

log = logging.getLogger("storage")

POLL_SECONDS = 1.0
RETENTION_MINUTES = 10
PRUNE_EVERY = 60.0          # seconds between prunes (each server prunes; deleting twice is harmless)


class ChangeFeed:
    """Polls `sample_changes` for other origins' committed changes and hands them to `deliver`
    as (kind, id) pairs in commit-safe order, one call per poll with anything new."""

    def __init__(self, database: Any, origin: str, deliver: Callable[[list[tuple[str, str]]], None],
                 interval: float = POLL_SECONDS, refresh: Callable[[str], None] | None = None,
                 after_poll: Callable[[int], None] | None = None):
        """`refresh(columns)`: save a fresh statistics snapshot of those columns (started by the
        prune step when the log kept for the saved one has grown, `stats_snapshot.due`, in a
        thread of its own).
        `after_poll(horizon)`: called after each poll that worked, with the horizon it reached (the
        store settles its own writes in doubt: this origin's rows of the log are not read)."""
        self.database = database
        self.origin = origin
        self.deliver = deliver
        self.refresh = refresh
        self.after_poll = after_poll
        self.interval = interval
        self._stop = threading.Event()
        self._polling = threading.Lock()   # one poll at a time (the thread's, or a caller's)
        self._thread: threading.Thread | None = None
        self._refreshing: threading.Thread | None = None   # saving a fresh statistics snapshot
        self._horizon = self._current_horizon()
        self._pruned = time.monotonic()
        self._outage = Outage(log, "the change feed (other servers' writes)")

    def _current_horizon(self) -> int:
        with self.database.reading() as session:
            return int(session.execute(f"SELECT {COMMITTED_HORIZON}::text").fetchone()[0])

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="sample-change-feed", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in (self._thread, self._refreshing):
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.poll()
            except Exception as exc:  # noqa: BLE001 - the database may be away for a while: tried again
                self._outage.failed(exc, "reading other servers' changes")
            else:
                self._outage.worked()

    def poll(self) -> int:
        """Deliver what other servers committed since the last poll; returns how many changes."""
        with self._polling:
            return self._poll()

    def _poll(self) -> int:
        horizon = self._current_horizon()
        with self.database.reading() as session:
            rows = session.execute(
                "SELECT kind, id FROM sample_changes WHERE xid >= CAST(CAST(? AS text) AS xid8) "
                "AND xid < CAST(CAST(? AS text) AS xid8) AND origin IS DISTINCT FROM ? ORDER BY seq",
                (self._horizon, horizon, self.origin)).fetchall()
            refresh = None
            if time.monotonic() - self._pruned > PRUNE_EVERY:
                session.execute(stats_snapshot.PRUNE.format(minutes=RETENTION_MINUTES))
                refresh = stats_snapshot.due(session)
                self._pruned = time.monotonic()
        changes = [(kind, sample_id) for kind, sample_id in rows]
        if changes and not self._stop.is_set():
            self.deliver(changes)   # if this fails, the next poll delivers them again
        self._horizon = horizon
        if self.after_poll is not None and not self._stop.is_set():
            self.after_poll(horizon)
        if refresh is not None and self.refresh is not None and not self._stop.is_set():
            self._refresh_later(refresh)
        return len(changes)

    def _refresh_later(self, columns: str) -> None:
        """Save a fresh statistics snapshot in a thread of its own (at 1M rows it takes seconds,
        which other servers' changes must not wait for); one at a time."""
        if self._refreshing is not None and self._refreshing.is_alive():
            return
        self._refreshing = stats_snapshot.in_background(self._refresh_now, columns)

    def _refresh_now(self, columns: str) -> None:
        assert self.refresh is not None
        try:
            self.refresh(columns)
        except Exception as exc:  # noqa: BLE001 - tried again at the next prune; a start then reads every row
            log.warning("could not save a fresh statistics snapshot (%s)", exc)
