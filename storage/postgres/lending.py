"""Connections lent from a pool while the database may be away: a clear `DatabaseUnreachable`
within about two seconds instead of a 30-second wait or a driver error, and recovery by itself.

A request waits `FIRST_WAIT` for a pooled connection; if none comes, one direct connection
attempt (`probe`) tells a busy pool (the server answers: wait on, up to the full wait) from an
unreachable server (fail now). Once the server is known to be away, requests do not wait on
the pool at all: at most one probe per `PROBE_EVERY` seconds decides for everyone, so reads
answer 503 at once and the first probe that connects lets them through again. A connection that
breaks while in use is `DatabaseUnreachable` too (the server is counted as away only if a probe
fails: one dropped connection is not an outage). The
pools give up a failing reconnection after `RECONNECT_SECONDS` (instead of backing off for
minutes), and a request that needs a connection starts a fresh attempt, so they refill soon
after the server is back. One log line when the database goes away, one when it answers again.
"""
from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from storage.errors import DatabaseUnreachable
from storage.outage import Outage

log = logging.getLogger("storage")
# the pools' own warnings (each failed reconnection, each broken connection discarded) would be a
# line per try during an outage; the `Outage` below says it once each way instead
logging.getLogger("psycopg.pool").setLevel(logging.ERROR)

FIRST_WAIT = 2.0          # seconds a request waits for a pooled connection before asking if the server is there
PROBE_EVERY = 0.5         # while the server is away: seconds between two connection attempts
PROBE_TIMEOUT = 2         # seconds one attempt may take (libpq's connect_timeout, whole seconds)
RECONNECT_SECONDS = 3.0   # the pools' reconnect_timeout: a failing reconnection is given up after this
ADVICE = "check that the database server runs and DATABASE_URL names it; this server retries by itself"


class Lender:
    """Lends connections of one database's pools (the store's and the shared state's)."""

    def __init__(self, url: str, where: str, scrub: Callable[[Any], str]):
        self.url = url
        self.where = where
        self.scrub = scrub
        self.outage = Outage(log, f"the database {where}")
        self._probe_lock = threading.Lock()
        self._probed_at = float("-inf")
        self._probe_problem: str | None = None

    @contextmanager
    def lend(self, pool: ConnectionPool, wait: float) -> Iterator[psycopg.Connection]:
        """A connection of `pool` (waiting up to `wait` seconds if the pool is merely busy),
        returned to it afterwards. Raises `DatabaseUnreachable` when the server cannot be reached
        or the connection broke in use; any other error of the body passes through."""
        connection = self._get(pool, wait)
        try:
            yield connection
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            if connection.broken or connection.closed:   # away, or just this connection dropped?
                problem = self.probe()
                raise self.unreachable(problem or exc, away=problem is not None) from None
            raise
        finally:
            pool.putconn(connection)
        self.outage.worked()

    def check(self) -> None:
        """Raise `DatabaseUnreachable` if the server is known to be away and a probe (at most one
        per `PROBE_EVERY`) still cannot reach it; otherwise nothing (no query is made)."""
        if self.outage.active:
            problem = self.probe()
            if problem is not None:
                raise self.unreachable(problem)

    def unreachable(self, exc: BaseException | str, away: bool = True) -> DatabaseUnreachable:
        """The error to raise; `away`: the server cannot be reached (not just one connection lost)."""
        reason = self.scrub(exc) or type(exc).__name__
        if away:
            self.outage.failed(reason)
        return DatabaseUnreachable(self.where, reason, ADVICE)

    def probe(self, fresh: bool = False) -> str | None:
        """None if a new connection to the server can be made, else why not. Without `fresh`, a
        result younger than `PROBE_EVERY` is reused (one thread probes, the others take its answer)."""
        with self._probe_lock:
            if not fresh and time.monotonic() - self._probed_at < PROBE_EVERY:
                return self._probe_problem
            try:
                psycopg.connect(self.url, connect_timeout=PROBE_TIMEOUT, autocommit=True).close()
            except psycopg.Error as exc:
                self._probe_problem = self.scrub(exc) or type(exc).__name__
            else:
                self._probe_problem = None
            self._probed_at = time.monotonic()
            return self._probe_problem

    def _get(self, pool: ConnectionPool, wait: float) -> psycopg.Connection:
        self.check()
        try:
            return pool.getconn(timeout=min(wait, FIRST_WAIT))
        except PoolTimeout:
            pass
        problem = self.probe(fresh=True)
        if problem is not None:
            raise self.unreachable(problem)
        try:   # the server answers: the pool is busy or refilling
            return pool.getconn(timeout=max(0.1, wait - FIRST_WAIT))
        except PoolTimeout:
            raise DatabaseUnreachable(self.where, f"no free connection in {wait:g}s (the server answers, "
                                      "every pooled connection is busy)", ADVICE) from None
