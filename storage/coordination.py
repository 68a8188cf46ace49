"""What several servers on one PostgreSQL database agree on: who is alive, and who runs the batch.

`ServerRegistry`: each server has an id (`server_id()`: host:port:pid, stable for the process) and
a row in `servers` whose `heartbeat_at` it refreshes; a server whose heartbeat is older than the
lease time counts as gone.

`BatchLeases`: the one row of `batch_lease` (its primary key is a constant, so a second row cannot
exist: one batch system-wide, enforced by the database, not by a read-then-write) names the
running batch, the server that runs it (`owner`) and when its lease ends (`expires_at`). The owner
renews it well before then; when it stops renewing (killed, hung, cut off), any live server takes
the row over with one conditional UPDATE, which exactly one of them wins. `stop_requested` lets
any server stop the batch: the owner reads it on its next renewal. Every time is the database's
own clock (`clock_timestamp()`), so the servers' clocks never have to agree.

Fencing: a trigger on `samples` (installed with the schema) refuses a row of a leased batch from
any server but the owner (the session names itself in `uklaw.server_id`, set by `fence()`), and
it reads the lease row `FOR SHARE`, so a takeover waits for a sample being stored and then counts
it, or the late sample is refused: the batch never ends above its target, even when an owner that
lost its lease (paused, cut off) wakes up and tries to store.

`connect` is a callable giving a connection inside one short transaction, committed when the
block ends (`transactions(pool)` makes one from a psycopg_pool `ConnectionPool`, autocommit or not).
"""
from __future__ import annotations

import os
import socket
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Literal, TypeVar

import psycopg
import psycopg.errors

from storage.errors import DatabaseUnreachable

Connect = Callable[[], AbstractContextManager[psycopg.Connection]]

SERVER_SETTING = "uklaw.server_id"   # the session variable the fencing trigger reads

# An xid8 below which every transaction that could still write this database's rows has ended
# (the change feed's and the shared budget samples' horizon): a fresh snapshot's oldest running
# xid, not counting those known to run in other databases of the same server, so a long bulk
# load elsewhere does not hold this database's feeds back. A running xid whose backend is not
# found (it ended meanwhile, or is a prepared transaction) still counts: waiting is always safe.
COMMITTED_HORIZON = (
    "(SELECT COALESCE((SELECT min(x) FROM pg_snapshot_xip(s.snap) AS x WHERE NOT EXISTS ("
    "SELECT 1 FROM pg_stat_activity AS a WHERE a.backend_xid IS NOT NULL "
    "AND a.datid <> (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND a.backend_xid::text::bigint = mod(x::text::bigint, 4294967296))), pg_snapshot_xmax(s.snap)) "
    "FROM (SELECT pg_current_snapshot() AS snap) AS s)")


def transactions(pool: Any) -> Connect:
    """`connect` for a connection pool: each call lends a connection inside one transaction."""
    @contextmanager
    def connect() -> Iterator[psycopg.Connection]:
        with pool.connection() as db, db.transaction():
            yield db
    return connect


def server_id(port: int | None = None) -> str:
    """This process's id: host:port:pid (stable for the process, unique on the database)."""
    return f"{socket.gethostname()}:{port if port is not None else 0}:{os.getpid()}"


@dataclass(frozen=True)
class Lease:
    batch_id: str
    owner: str
    seconds_left: float
    stop_requested: bool
    takeovers: int
    previous_owner: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"batch_id": self.batch_id, "holder": self.owner, "seconds_left": round(self.seconds_left, 3),
                "stop_requested": self.stop_requested, "takeovers": self.takeovers}


Renewal = Literal["held", "stop", "lost"]


class ServerRegistry:
    """The `servers` table: this server's row and the others'."""

    def __init__(self, connect: Connect, server: str, *, live_seconds: float):
        self.connect = connect
        self.server = server
        self.live_seconds = live_seconds

    def heartbeat(self, address: str | None = None) -> None:
        """Create or refresh this server's row (its address when given)."""
        with self.connect() as db:
            db.execute(
                "INSERT INTO servers (id, address, started_at, heartbeat_at) "
                "VALUES (%s, %s, clock_timestamp(), clock_timestamp()) ON CONFLICT (id) DO UPDATE SET "
                "heartbeat_at = clock_timestamp(), address = coalesce(excluded.address, servers.address)",
                (self.server, address))

    def live(self) -> list[dict[str, Any]]:
        """Servers whose heartbeat is younger than `live_seconds`, this one included, oldest first."""
        with self.connect() as db:
            rows = db.execute(
                "SELECT id, address, started_at, extract(epoch FROM clock_timestamp() - heartbeat_at) "
                "FROM servers WHERE heartbeat_at > clock_timestamp() - make_interval(secs => %s) "
                "ORDER BY started_at, id", (self.live_seconds,)).fetchall()
        return [{"id": r[0], "address": r[1], "started_at": r[2].isoformat(),
                 "heartbeat_age_seconds": round(float(r[3]), 3), "self": r[0] == self.server} for r in rows]

    def leave(self) -> None:
        """Remove this server's row (a clean shutdown), and rows silent for a day."""
        with self.connect() as db:
            db.execute("DELETE FROM servers WHERE id = %s OR heartbeat_at < clock_timestamp() - interval '1 day'",
                       (self.server,))


class BatchLeases:
    """The batch lease: one row at most, owned by the server that runs the batch."""

    def __init__(self, connect: Connect, server: str, *, lease_seconds: float):
        self.connect = connect
        self.server = server
        self.lease_seconds = lease_seconds

    def acquire(self, batch_id: str) -> str | None:
        """Lease a new batch to this server: None on success, else the id of the batch that holds
        the one lease (the caller answers 409). One INSERT: two servers starting at the same
        instant cannot both succeed."""
        with self.connect() as db:
            db.execute("SET LOCAL synchronous_commit = on")   # a lease taken is on disk before it is used
            row = db.execute(
                "INSERT INTO batch_lease (slot, batch_id, owner, expires_at) "
                "VALUES (1, %s, %s, clock_timestamp() + make_interval(secs => %s)) "
                "ON CONFLICT (slot) DO NOTHING RETURNING batch_id", (batch_id, self.server, self.lease_seconds)
            ).fetchone()
            if row is not None:
                return None
            holder = db.execute("SELECT batch_id FROM batch_lease WHERE slot = 1").fetchone()
        return holder[0] if holder else self.acquire(batch_id)   # released in between: try again

    def renew(self, batch_id: str) -> Renewal:
        """Extend this server's lease: "held", "stop" (another server asked to stop the batch),
        or "lost" (it expired and another server took it, or it was released)."""
        with self.connect() as db:
            row = db.execute(
                "UPDATE batch_lease SET expires_at = clock_timestamp() + make_interval(secs => %s) "
                "WHERE batch_id = %s AND owner = %s RETURNING stop_requested",
                (self.lease_seconds, batch_id, self.server)).fetchone()
        if row is None:
            return "lost"
        return "stop" if row[0] else "held"

    def release(self, batch_id: str) -> bool:
        """The batch ended (completed, stopped, failed): free the lease if this server holds it."""
        with self.connect() as db:
            return db.execute("DELETE FROM batch_lease WHERE batch_id = %s AND owner = %s",
                              (batch_id, self.server)).rowcount > 0

    def hand_over(self, batch_id: str) -> None:
        """This server is shutting down with the batch unfinished: end the lease now, so another
        live server takes it over at its next look instead of after the lease time."""
        with self.connect() as db:
            db.execute("UPDATE batch_lease SET expires_at = clock_timestamp() WHERE batch_id = %s AND owner = %s",
                       (batch_id, self.server))

    def take_over(self) -> Lease | None:
        """Take the lease if it has expired; None if there is none or it is alive. One UPDATE
        with the row locked: it waits (at most 5 s) for a sample the old owner is storing (the
        fence holds the row meanwhile), and of servers taking over at once the first wins; the
        others, once it commits, find the lease alive and take nothing."""
        with self.connect() as db:
            db.execute("SET LOCAL lock_timeout = '5s'")
            db.execute("SET LOCAL synchronous_commit = on")
            row = db.execute(
                "WITH old AS (SELECT slot, owner FROM batch_lease WHERE slot = 1 "
                "  AND expires_at < clock_timestamp() FOR UPDATE) "
                "UPDATE batch_lease SET owner = %s, expires_at = clock_timestamp() + make_interval(secs => %s), "
                "  takeovers = takeovers + 1 FROM old WHERE batch_lease.slot = old.slot "
                "RETURNING batch_lease.batch_id, batch_lease.stop_requested, batch_lease.takeovers, old.owner",
                (self.server, self.lease_seconds)).fetchone()
        if row is None:
            return None
        return Lease(row[0], self.server, self.lease_seconds, bool(row[1]), int(row[2]), previous_owner=row[3])

    def adopt(self, batch_id: str) -> bool:
        """Lease a batch found running with no lease row at all (a database from before leases):
        True if this server now holds it."""
        return self.acquire(batch_id) is None

    def request_stop(self, batch_id: str | None = None) -> Lease | None:
        """Ask the owner to stop the leased batch (that one only, when `batch_id` is given): the
        lease as it now stands, or None when no such batch holds it."""
        with self.connect() as db:
            row = db.execute(
                "UPDATE batch_lease SET stop_requested = true WHERE slot = 1 AND (%s::text IS NULL OR batch_id = %s) "
                "RETURNING batch_id, owner, extract(epoch FROM expires_at - clock_timestamp()), takeovers",
                (batch_id, batch_id)).fetchone()
        if row is None:
            return None
        return Lease(row[0], row[1], float(row[2]), True, int(row[3]))

    def holder(self) -> Lease | None:
        """The lease as it stands (seconds_left may be negative: expired, not yet taken over)."""
        with self.connect() as db:
            row = db.execute(
                "SELECT batch_id, owner, extract(epoch FROM expires_at - clock_timestamp()), stop_requested, "
                "takeovers FROM batch_lease WHERE slot = 1").fetchone()
        if row is None:
            return None
        return Lease(row[0], row[1], float(row[2]), bool(row[3]), int(row[4]))


def fence(db: psycopg.Connection, server: str) -> None:
    """Name this server on a connection, for the fencing trigger on `samples` (session-wide: call
    it when a pooled connection is made)."""
    db.execute("SELECT set_config(%s, %s, false)", (SERVER_SETTING, server))


def shared_connect(database: Any) -> Connect | None:
    """`connect` for the store's database when it is PostgreSQL (its pool for shared state, whose
    failures while the server is away are `DatabaseUnreachable`); None for SQLite, where one server
    serves a data directory and nothing is shared."""
    make_connect = getattr(database, "shared_transactions", None)
    return make_connect() if make_connect is not None else None


T = TypeVar("T")


def once_more(work: Callable[[], T]) -> T:
    """Run a transaction's work, and once more if the connection failed (a connection the
    database dropped is only found broken when used; the pool replaces it). The failed attempt
    was rolled back whole, so running the work again is safe."""
    try:
        return work()
    except (psycopg.OperationalError, psycopg.InterfaceError, DatabaseUnreachable) as exc:
        if isinstance(exc, psycopg.errors.ObjectNotInPrerequisiteState):
            raise
        return work()
