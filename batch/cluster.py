"""Several servers on one PostgreSQL database: this server's part in running the one batch.

`Cluster` bundles this server's id, its registry row and the batch lease (`storage.coordination`).
A `LeaseKeeper` thread, started with the services, every `tick` seconds (a sixth of the lease,
between 0.05 and 1 s):
  - refreshes this server's heartbeat row;
  - renews the lease of the batch this server runs: another server asked to stop it -> the run
    stops (and the lease is released); the lease was lost (it expired and another server took it,
    or the database could not be reached for a whole lease time) -> the run is abandoned at once,
    without writing anything more, and the new owner carries on;
  - when this server runs nothing, takes over an expired lease: the batch resumes here under the
    same id, its progress counted from the rows stored for it, so it still ends at its target;
  - for event-stream clients here, publishes the state another server saved for the batch.

In SQLite mode there is no cluster: one server per data directory, as before.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

from storage.coordination import BatchLeases, Connect, ServerRegistry, server_id
from storage.outage import Outage

log = logging.getLogger("batch")


@dataclass
class Cluster:
    server_id: str
    registry: ServerRegistry
    leases: BatchLeases
    lease_seconds: float
    address: str | None = None

    @property
    def tick(self) -> float:
        return min(1.0, max(0.05, self.lease_seconds / 6))

    def describe(self) -> dict[str, Any]:
        """For /api/health: this server, the lease and the other live servers."""
        lease = self.leases.holder()
        servers = self.registry.live()
        return {"server_id": self.server_id, "lease_seconds": self.lease_seconds,
                "lease": lease.to_dict() if lease else None,
                "servers": [s for s in servers if not s["self"]]}


def join(connect: Connect, *, host: str, port: int, lease_seconds: float) -> Cluster:
    """This server's membership: its id (host:port:pid), registry row and lease handle."""
    me = server_id(port)
    return Cluster(me, ServerRegistry(connect, me, live_seconds=lease_seconds),
                   BatchLeases(connect, me, lease_seconds=lease_seconds), lease_seconds,
                   address=f"http://{host}:{port}")


class LeaseHolder(Protocol):
    """What the keeper drives: the batch manager."""

    def keep_leases(self) -> None: ...

    def lease_unreachable(self, now: float) -> None: ...


class LeaseKeeper:
    """The thread that keeps this server's heartbeat and lease (see the module docstring)."""

    def __init__(self, cluster: Cluster, manager: LeaseHolder):
        self.cluster = cluster
        self.manager = manager
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._outage = Outage(log, "cluster: the database (heartbeat and batch lease)")

    def start(self) -> None:
        self.step()   # registered (and a waiting batch taken over) before the server answers
        self._thread = threading.Thread(target=self._loop, name="lease-keeper", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.wait(self.cluster.tick):
            self.step()

    def step(self) -> None:
        """One round: heartbeat, renew or take over, publish. A database failure is logged once
        per outage (by the database itself when it is away) and retried at the next tick; the
        lease runs out meanwhile (see `renew`)."""
        try:
            self.cluster.registry.heartbeat(self.cluster.address)
            self.manager.keep_leases()
        except Exception as exc:  # noqa: BLE001 - the keeper must outlive an outage; say so once
            self.manager.lease_unreachable(time.monotonic())
            self._outage.failed(exc, "renewing leases")
        else:
            self._outage.worked()
