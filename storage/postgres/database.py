"""The PostgreSQL database behind the store: a psycopg 3 connection pool, the schema on open.

Opening checks everything a misconfiguration could break, once, before the pool starts: that
the server answers, the credentials and the database, the schema (migrated, or refused if newer),
and a small real write (privileges). Each failure is `DatabaseUnavailable` (or `SchemaTooNew`),
one line naming the URL without its password; the password never appears in a message.

Connections run in autocommit; `transaction()` wraps a write in one transaction (rolled back
whole on any error) and `stream()` reads through a server-side cursor, so a million-row export
holds one chunk in memory. A failure of the server or the network while writing is `WriteFailed`;
the server being away or a connection breaking, for a read or a write, is `DatabaseUnreachable`
(a `WriteFailed`), raised within about two seconds (`lending`), and the pools recover by themselves.
"""
from __future__ import annotations

import logging
import threading
import uuid
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool, PoolTimeout

from state import utc_now
from storage.coordination import Connect, fence
from storage.dialect import POSTGRES
from storage.errors import DatabaseUnavailable, NotLeaseHolder, WriteFailed
from storage.postgres import schema
from storage.postgres.lending import RECONNECT_SECONDS, Lender
from storage.postgres.session import Row, Session, row_factory
from storage.postgres.url import password_of, redact_url

log = logging.getLogger("storage")

CONNECT_TIMEOUT = 5        # seconds to reach the server at start-up and for each new pooled connection
POOL_MIN, POOL_MAX = 1, 10
POOL_WAIT = 30.0           # seconds a request waits for a free connection
ADVICE = "check that the database server runs and DATABASE_URL names it; writes are retried"
# A connection the network drops silently (no FIN, no RST) would hang a query until the kernel
# gives up, about 15 minutes. libpq's TCP keepalives find an idle dead peer in about 25 s, and
# `tcp_user_timeout` fails a query whose data goes unacknowledged for 30 s. The URL's own win.
TCP_LIVENESS = {"keepalives": "1", "keepalives_idle": "10", "keepalives_interval": "5",
                "keepalives_count": "3", "tcp_user_timeout": "30000"}


class PostgresDatabase:
    """One PostgreSQL database (or schema: `options=-csearch_path=...` in the URL) and its pool."""

    dialect = POSTGRES
    IntegrityError = psycopg.IntegrityError

    def __init__(self, url: str, *, min_size: int = POOL_MIN, max_size: int = POOL_MAX, server: str | None = None):
        """`server`: this server's id, set on every pooled connection for the trigger that keeps
        batch rows to the lease holder (`storage.coordination.fence`)."""
        self.url = _with_liveness(url)
        self.where = redact_url(url)
        self.path = self.where            # what messages name (a file path in SQLite mode)
        self._password = password_of(url)
        self.server = server
        self.schema_version = self._check_and_migrate()
        self.lender = Lender(self.url, self.where, self._scrub)
        # check: a connection the server dropped (a restart, a network cut) is replaced before use
        self.origin = uuid.uuid4().hex   # this pool's writes, as `sample_changes` records them
        self.pool = ConnectionPool(self.url, min_size=min_size, max_size=max_size, timeout=POOL_WAIT, open=False,
                                   check=ConnectionPool.check_connection, configure=self._configure,
                                   reconnect_timeout=RECONNECT_SECONDS,
                                   kwargs={"autocommit": True, "row_factory": row_factory,
                                           "connect_timeout": CONNECT_TIMEOUT},
                                   name="uk-law-storage")
        try:
            self.pool.open(wait=True, timeout=CONNECT_TIMEOUT * 2)
        except PoolTimeout as exc:
            self.pool.close()
            raise DatabaseUnavailable(f"{self.where}: the connection pool could not connect ({exc}); "
                                      "check the database server") from None
        self._closed = threading.Event()
        self._shared_pool: ConnectionPool | None = None
        self._shared_lock = threading.Lock()

    def _configure(self, connection: psycopg.Connection[Any]) -> None:
        """Each new pooled connection tags its writes with this pool's origin (see `changes`) and,
        with several servers, names this server for the batch-row fence (`coordination_schema`)."""
        connection.execute("SELECT set_config('uklaw.origin', %s, false)", (self.origin,))
        if self.server:
            fence(connection, self.server)

    # -- start-up ----------------------------------------------------------------------------

    def _scrub(self, text: Any) -> str:
        line = " ".join(str(text).split())
        return line.replace(self._password, "***") if self._password else line

    def _reason(self, exc: psycopg.Error) -> str:
        """The server's own one-line message (without the statement it quotes), scrubbed."""
        primary = getattr(getattr(exc, "diag", None), "message_primary", None)
        return self._scrub(primary or exc)

    def _check_and_migrate(self) -> int:
        try:
            connection = psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT,
                                         row_factory=row_factory)
        except psycopg.Error as exc:
            raise DatabaseUnavailable(f"{self.where}: cannot connect ({self._scrub(exc)}); "
                                      f"{_connect_advice(exc)}") from None
        try:
            with connection:
                session = Session(connection)
                try:
                    version = schema.migrate(session, self.where)
                    _probe_write(session)
                except (pg_errors.InsufficientPrivilege, pg_errors.InvalidSchemaName) as exc:
                    user = connection.info.user
                    raise DatabaseUnavailable(
                        f"{self.where}: user {user!r} lacks a privilege this server needs ({self._reason(exc)}); "
                        "grant it USAGE and CREATE on the schema and SELECT, INSERT, UPDATE, DELETE on its "
                        "tables") from None
                except psycopg.Error as exc:
                    raise DatabaseUnavailable(f"{self.where}: cannot prepare the database ({self._reason(exc)}); "
                                              "check DATABASE_URL and the server's log") from None
        except DatabaseUnavailable:
            raise
        except psycopg.Error as exc:
            raise DatabaseUnavailable(f"{self.where}: {self._scrub(exc)}; check the database server") from None
        return version

    # -- sessions ----------------------------------------------------------------------------

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A pooled connection for reads (autocommit: each statement sees the latest commits).
        `DatabaseUnreachable` if the server is away or the connection breaks."""
        with self.lender.lend(self.pool, POOL_WAIT) as connection:
            yield Session(connection)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A write transaction, committed or rolled back whole. A failure of the server or the
        network raises `WriteFailed` (`DatabaseUnreachable` when the server is away); a constraint
        (`IntegrityError`) passes through."""
        try:
            with self.lender.lend(self.pool, POOL_WAIT) as connection:
                with connection.transaction():
                    yield Session(connection)
        except (psycopg.OperationalError, PoolTimeout) as exc:
            if isinstance(exc, pg_errors.QueryCanceled | pg_errors.LockNotAvailable):
                raise
            if isinstance(exc, pg_errors.ObjectNotInPrerequisiteState):   # the batch-row fence
                raise NotLeaseHolder(self._reason(exc)) from None
            raise WriteFailed(self.where, self._scrub(exc), ADVICE) from exc

    def stream(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None,
               chunk: int = 1000) -> Iterator[Row]:
        """Rows of a query, fetched `chunk` at a time through a server-side cursor."""
        from storage.postgres.session import translate

        with self.lender.lend(self.pool, POOL_WAIT) as connection:
            with connection.transaction():
                with connection.cursor(name="uk_law_stream") as cursor:
                    cursor.itersize = chunk
                    cursor.execute(translate(sql), params if params else None)
                    while rows := cursor.fetchmany(chunk):
                        yield from rows

    # -- checks and facts --------------------------------------------------------------------

    def write_problem(self, busy_timeout: float | None = None) -> str | None:
        """Try a small real write: None if it worked, else what is wrong (one line)."""
        try:
            with self.transaction() as session:
                _probe_write(session)
        except WriteFailed as exc:
            return str(exc)
        except psycopg.Error as exc:
            return f"cannot write {self.where}: {self._scrub(exc)}"
        return None

    def writable(self) -> bool:
        return self.write_problem() is None

    def size_bytes(self) -> int:
        """The size of this server's tables with their indexes and TOAST, in the current schema."""
        with self.reading() as session:
            return int(session.execute(
                "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema() "
                "AND c.relkind = 'r'").fetchone()[0])

    def describe(self) -> dict[str, Any]:
        """What /api/health reports about the database (never the password)."""
        return {"backend": "postgresql", "database_url": self.where, "schema_version": self.schema_version,
                "pool": {"size": self.pool.get_stats().get("pool_size", 0), "max": self.pool.max_size}}

    def check_reachable(self) -> None:
        """Raise `DatabaseUnreachable` while the server is known to be away (a probe at most every
        half second; no query otherwise): for answers served from memory, such as statistics."""
        self.lender.check()

    def shared_transactions(self) -> Connect:
        """`connect` for the shared state (`storage.coordination`): a connection of the shared-state
        pool inside one transaction, lent like the store's (`DatabaseUnreachable` when away)."""
        pool = self.shared_state_pool()

        @contextmanager
        def connect() -> Iterator[psycopg.Connection]:
            with self.lender.lend(pool, POOL_WAIT) as db, db.transaction():
                yield db
        return connect

    def shared_state_pool(self) -> ConnectionPool:
        """A second, small pool for the state servers share (`storage.coordination`, the limiter's
        and health board's rows), made on first use: their transactions are a few milliseconds
        on the path of every provider call, so its connections are not checked before each use
        (the store's are); a dropped connection fails one transaction, which those callers retry
        once (`storage.coordination.once_more`). Its commits do not wait for the disk
        (`_fast_commits`)."""
        with self._shared_lock:
            if self._shared_pool is None:
                self._shared_pool = ConnectionPool(self.url, min_size=1, max_size=16, timeout=POOL_WAIT, open=True,
                                                   reconnect_timeout=RECONNECT_SECONDS,
                                                   kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT},
                                                   configure=_fast_commits, name="uk-law-shared-state")
            return self._shared_pool

    def close(self) -> None:
        self.pool.close()
        if self._shared_pool is not None:
            self._shared_pool.close()


def _fast_commits(connection: psycopg.Connection) -> None:
    """Commits that do not wait for the write-ahead log to reach the disk (a flush costs
    milliseconds on a busy disk, twice per provider call). What a database crash could lose is
    the last fraction of a second of pacing records, cooldowns and heartbeats, all short-lived
    and corrected by the next request; it never reorders or half-applies a transaction. Taking
    a lease asks for a durable commit itself (`storage.coordination`)."""
    connection.execute("SET synchronous_commit = off")


def _probe_write(session: Session) -> None:
    session.execute("INSERT INTO storage_probe (id, at) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET at = excluded.at",
                    (utc_now(),))


def _with_liveness(url: str) -> str:
    """The connection string with `TCP_LIVENESS`'s settings the URL does not make itself (an
    unparsable URL unchanged: connecting reports it)."""
    try:
        given = conninfo_to_dict(url)
    except psycopg.Error:
        return url
    return make_conninfo(url, **{key: value for key, value in TCP_LIVENESS.items() if key not in given})


def _connect_advice(exc: psycopg.Error) -> str:
    text = str(exc).lower()
    if "password authentication failed" in text or "no password supplied" in text or "authentication" in text:
        return "check the user name and password in DATABASE_URL"
    if "does not exist" in text and "database" in text:
        return "create the database (createdb NAME) or fix its name in DATABASE_URL"
    if "role" in text and "does not exist" in text:
        return "create the user or fix its name in DATABASE_URL"
    return "check that the database server runs and that DATABASE_URL names its host and port"
