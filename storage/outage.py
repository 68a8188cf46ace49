"""One log line when something stops working and one when it works again, however often it is
tried meanwhile: background work that retries a database every second says so twice per outage,
not once per try. A failure that is the database being away (`DatabaseUnreachable`) is not logged
again by each part that meets it: the database's own `Outage` (`postgres.lending`) said it once."""
from __future__ import annotations

import logging
import threading
import time

from storage.errors import DatabaseUnreachable


class Outage:
    def __init__(self, log: logging.Logger, what: str):
        """`what`: the thing that fails, as the log lines name it ("the shared engine state")."""
        self.log = log
        self.what = what
        self._lock = threading.Lock()
        self.since: float | None = None     # monotonic time of the first failure, None while it works
        self.reason: str | None = None
        self.quiet = False                  # this outage is the database's, which logs it itself

    @property
    def active(self) -> bool:
        return self.since is not None

    def failed(self, exc: BaseException | str, doing: str = "") -> None:
        """A try failed; logged only if it is the first since things last worked (and is not
        the database being away, which the database logs)."""
        with self._lock:
            first = self.since is None
            self.reason = " ".join(str(exc).split())
            if first:
                self.since = time.monotonic()
                self.quiet = isinstance(exc, DatabaseUnreachable)
        if first and not self.quiet:
            self.log.warning("%s is unavailable%s (%s); retrying quietly until it answers again",
                             self.what, f" ({doing})" if doing else "", self.reason)

    def worked(self) -> None:
        """A try worked; logged only if the failure was."""
        if self.since is None:
            return
        with self._lock:
            since, self.since, self.reason = self.since, None, None
        if since is not None and not self.quiet:
            self.log.warning("%s answers again (after %.1f s)", self.what, time.monotonic() - since)
